//! A fault-injecting TCP proxy for HTTP on loopback.
//!
//! It sits between a client and an S3 server (both on 127.0.0.1). For a
//! configurable share of connections, chosen by a seeded generator so a run
//! can be repeated, it injects one fault:
//!
//! * a connection reset before the response (after the request head);
//! * a connection reset part way through the response;
//! * a `500 InternalError` or `503 SlowDown` answer without asking the server;
//! * a response cut short (the connection closes cleanly mid-body);
//! * added latency before the connection is served.
//!
//! Every connection the proxy accepts is bounded in time and the proxy stops
//! when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy injects, and how often.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// Seed for the per-connection choices.
    pub seed: u64,
    /// Share of connections (0.0 to 1.0) that get a fault.
    pub fault_rate: f64,
    /// Latency added to faulty connections chosen for the latency fault.
    pub latency: Duration,
    /// Inject only `503 SlowDown` answers (to exercise back-off).
    pub slow_down_only: bool,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 7,
            fault_rate: 0.1,
            latency: Duration::from_millis(200),
            slow_down_only: false,
        }
    }
}

/// Counts of what the proxy did.
#[derive(Debug, Default)]
pub struct FaultStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Resets before the response.
    pub reset_before: AtomicU64,
    /// Resets during the response.
    pub reset_during: AtomicU64,
    /// 500 answers.
    pub internal_errors: AtomicU64,
    /// 503 SlowDown answers.
    pub slow_downs: AtomicU64,
    /// Responses cut short.
    pub truncated: AtomicU64,
    /// Connections delayed.
    pub delayed: AtomicU64,
}

impl FaultStats {
    /// Faults injected in all.
    pub fn faults(&self) -> u64 {
        [
            &self.reset_before,
            &self.reset_during,
            &self.internal_errors,
            &self.slow_downs,
            &self.truncated,
            &self.delayed,
        ]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    ResetBefore,
    ResetDuring(usize),
    InternalError,
    SlowDown,
    Truncate(usize),
    Delay,
}

/// A running proxy.
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// What it has done so far.
    pub stats: Arc<FaultStats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a fresh loopback port.
    pub fn start(upstream: SocketAddr, config: FaultConfig) -> Self {
        let stats = Arc::new(FaultStats::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(run(upstream, config, thread_stats, addr_tx, stop_rx));
            })
            .expect("spawn proxy thread");
        let addr = addr_rx.recv().expect("proxy address");
        FaultProxy {
            addr,
            stats,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://ADDR` for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    upstream: SocketAddr,
    config: FaultConfig,
    stats: Arc<FaultStats>,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    addr_tx
        .send(listener.local_addr().expect("local addr"))
        .expect("report address");
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    loop {
        let client = tokio::select! {
            r = listener.accept() => match r {
                Ok((c, _)) => c,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let fault = if rng.random::<f64>() < config.fault_rate {
            Some(
                match if config.slow_down_only {
                    3
                } else {
                    rng.random_range(0..6)
                } {
                    0 => Fault::ResetBefore,
                    1 => Fault::ResetDuring(rng.random_range(1..4096)),
                    2 => Fault::InternalError,
                    3 => Fault::SlowDown,
                    4 => Fault::Truncate(rng.random_range(1..4096)),
                    _ => Fault::Delay,
                },
            )
        } else {
            None
        };
        let stats = stats.clone();
        let latency = config.latency;
        tokio::spawn(async move {
            // No connection outlives this bound, whatever the peers do.
            let _ = tokio::time::timeout(
                Duration::from_secs(300),
                serve(client, upstream, fault, latency, stats),
            )
            .await;
        });
    }
}

/// Reads until the end of an HTTP request head (or EOF).
async fn read_head(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 1 << 20 {
            break;
        }
    }
    Ok(head)
}

fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn answer(mut client: TcpStream, status: &str, code: &str) {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Option<Fault>,
    latency: Duration,
    stats: Arc<FaultStats>,
) {
    match fault {
        Some(Fault::ResetBefore) => {
            let _ = read_head(&mut client).await;
            stats.reset_before.fetch_add(1, Ordering::SeqCst);
            reset(client);
            return;
        }
        Some(Fault::InternalError) => {
            let _ = read_head(&mut client).await;
            stats.internal_errors.fetch_add(1, Ordering::SeqCst);
            answer(client, "500 Internal Server Error", "InternalError").await;
            return;
        }
        Some(Fault::SlowDown) => {
            let _ = read_head(&mut client).await;
            stats.slow_downs.fetch_add(1, Ordering::SeqCst);
            answer(client, "503 Slow Down", "SlowDown").await;
            return;
        }
        Some(Fault::Delay) => {
            stats.delayed.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(latency).await;
        }
        _ => {}
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if matches!(fault, Some(Fault::ResetDuring(_))) {
        // Closing with linger 0 sends RST instead of FIN.
        let _ = client.set_zero_linger();
    }
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let limit = match fault {
        Some(Fault::ResetDuring(n)) | Some(Fault::Truncate(n)) => Some(n),
        _ => None,
    };
    let mut sent = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n >= l => l - sent,
            _ => n,
        };
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        sent += n;
        if limit == Some(sent) {
            match fault {
                Some(Fault::ResetDuring(_)) => {
                    stats.reset_during.fetch_add(1, Ordering::SeqCst);
                }
                _ => {
                    stats.truncated.fetch_add(1, Ordering::SeqCst);
                    let _ = cw.shutdown().await;
                }
            }
            break;
        }
    }
    up.abort();
    if !matches!(fault, Some(Fault::ResetDuring(_))) {
        let _ = cw.shutdown().await;
    }
}
