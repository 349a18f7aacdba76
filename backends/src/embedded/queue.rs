//! The in-process work queue. It holds no state that matters across a
//! restart: the catalog knows which entries still lack a verdict, and
//! startup re-enqueues them.

use async_trait::async_trait;
use picsift_core::Result;
use picsift_core::backend::{Lease, WorkQueue};
use picsift_core::chunk::ChunkTask;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// A FIFO of chunk tasks with wake-ups for waiting workers.
#[derive(Debug, Default)]
pub struct MemQueue {
    tasks: Mutex<VecDeque<(ChunkTask, u32)>>,
    dead: Mutex<Vec<(ChunkTask, String)>>,
    ready: Notify,
}

impl MemQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn pop(&self) -> Option<Lease> {
        let (task, before) = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()?;
        Some(Lease {
            task,
            receipt: String::new(),
            deliveries: before + 1,
        })
    }

    fn push(&self, task: ChunkTask, deliveries: u32) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((task, deliveries));
        self.ready.notify_one();
    }

    /// Tasks dead-lettered so far, with why.
    pub fn dead_letters(&self) -> Vec<(ChunkTask, String)> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl WorkQueue for MemQueue {
    async fn enqueue(&self, task: ChunkTask) -> Result<()> {
        self.push(task, 0);
        Ok(())
    }

    async fn dequeue(&self, wait_ms: u64) -> Result<Option<Lease>> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let notified = self.ready.notified();
            if let Some(lease) = self.pop() {
                return Ok(Some(lease));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(self.pop());
            }
        }
    }

    async fn ack(&self, _lease: &Lease) -> Result<()> {
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.push(lease.task.clone(), lease.deliveries);
        Ok(())
    }

    async fn dead_letter(&self, lease: &Lease, why: &str) -> Result<()> {
        self.dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((lease.task.clone(), why.to_string()));
        Ok(())
    }

    async fn backlog(&self) -> Result<u64> {
        Ok(self.tasks.lock().unwrap_or_else(|p| p.into_inner()).len() as u64)
    }
}
