//! A fault-injecting TCP proxy for the multi-process tests: the picsift
//! processes reach a backend (Redis, PostgreSQL, Garage) through it, and the
//! test can slow every byte down or cut every open connection, as a bad
//! network between pods would. Small on purpose (toxiproxy does more, but is
//! one more server to install): a listener on a loopback port and two copy
//! loops per connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A runtime of its own for the proxies (and the tests' receivers): what
/// they carry never waits on the test's own tasks, nor these on them.
pub fn background() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-network")
            .enable_all()
            .build()
            .expect("a runtime for the test network")
    })
}

/// A running proxy from `port` to the target port, both on loopback.
pub struct FaultProxy {
    /// The port clients connect to.
    pub port: u16,
    /// Milliseconds each chunk of bytes waits before it is passed on.
    delay_ms: Arc<AtomicU64>,
    /// Bumped to cut every connection open now.
    cuts: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target`
    /// (on the [`background`] runtime).
    pub fn start(target: u16) -> FaultProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (cuts, _) = watch::channel(0u64);
        let task = background().spawn({
            let (delay_ms, cuts) = (delay_ms.clone(), cuts.clone());
            async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let (delay_ms, cut) = (delay_ms.clone(), cuts.subscribe());
                    tokio::spawn(forward(client, target, delay_ms, cut));
                }
            }
        });
        FaultProxy {
            port,
            delay_ms,
            cuts,
            task,
        }
    }

    /// Delays every chunk of bytes, both ways, by `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Closes every connection open now (new ones are accepted).
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// A handle that cuts this proxy's connections from another task.
    pub fn cuts_handle(&self) -> Cutter {
        Cutter(self.cuts.clone())
    }
}

/// Cuts a proxy's open connections ([`FaultProxy::cuts_handle`]).
#[derive(Clone)]
pub struct Cutter(watch::Sender<u64>);

impl Cutter {
    /// Closes every connection open now.
    pub fn cut(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Copies both ways until either side closes or the connection is cut.
async fn forward(
    client: TcpStream,
    target: u16,
    delay_ms: Arc<AtomicU64>,
    mut cut: watch::Receiver<u64>,
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return; // the backend is down: the client sees its connection close
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = copy(cr, sw, delay_ms.clone()) => {}
        _ = copy(sr, cw, delay_ms) => {}
        _ = cut.changed() => {}
    }
}

async fn copy(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    delay_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
