//! The in-process work queue. It holds no state that matters across a
//! restart: the catalog knows which entries still lack a verdict, and
//! startup re-enqueues them.

use crate::Result;
use crate::chunk::ChunkTask;
use crate::store::{Lease, WorkQueue};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// A FIFO of chunk tasks with wake-ups for waiting workers.
#[derive(Debug, Default)]
pub struct MemQueue {
    tasks: Mutex<VecDeque<ChunkTask>>,
    ready: Notify,
}

impl MemQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn pop(&self) -> Option<ChunkTask> {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }
}

#[async_trait]
impl WorkQueue for MemQueue {
    async fn enqueue(&self, task: ChunkTask) -> Result<()> {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(task);
        self.ready.notify_one();
        Ok(())
    }

    async fn dequeue(&self, wait_ms: u64) -> Result<Option<Lease>> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let notified = self.ready.notified();
            if let Some(task) = self.pop() {
                return Ok(Some(Lease {
                    task,
                    receipt: String::new(),
                }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(self.pop().map(|task| Lease {
                    task,
                    receipt: String::new(),
                }));
            }
        }
    }

    async fn ack(&self, _lease: &Lease) -> Result<()> {
        Ok(())
    }

    async fn backlog(&self) -> Result<u64> {
        Ok(self.tasks.lock().unwrap_or_else(|p| p.into_inner()).len() as u64)
    }
}
