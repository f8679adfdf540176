//! An S3 server for tests: the `s3s` protocol layer over the `s3s-fs`
//! file-system backend, served over real HTTP on `127.0.0.1:0`.
//!
//! Every request the server receives is recorded, so tests can assert how many
//! requests a command made *as the server saw them*, not as the client claims.
//!
//! Set `PQSYNC_TEST_S3_ENDPOINT` (plus `PQSYNC_TEST_S3_BUCKET`,
//! `PQSYNC_TEST_S3_ACCESS_KEY`, `PQSYNC_TEST_S3_SECRET_KEY` and
//! `PQSYNC_TEST_S3_REGION`, and `PQSYNC_TEST_S3_CONDITIONAL=false` for a
//! server that ignores conditional writes) to run the same tests against an external server
//! such as Garage instead; request logs are then unavailable.
//!
//! Like S3, the in-process server refuses to copy more than a limit in one
//! request (CopyObject or UploadPartCopy); tests lower it with
//! [`S3Server::limit_copies`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

const ACCESS_KEY: &str = "pqsync-test-access";
const SECRET_KEY: &str = "pqsync-test-secret-key-0123456789";
const BUCKET: &str = "pqsync-test";
const OTHER_ACCESS_KEY: &str = "pqsync-other-access";
const OTHER_SECRET_KEY: &str = "pqsync-other-secret-key-9876543210";
const OTHER_BUCKET: &str = "pqsync-other";
const SECOND_BUCKET: &str = "pqsync-test-b";
/// The most S3 copies in one request.
const COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

/// A second account on the in-process server: its own keys, which may use
/// only its own bucket (and the first account's keys may not use it), as
/// two accounts of one provider.
#[derive(Clone, Debug)]
pub struct Account {
    /// The account's bucket.
    pub bucket: String,
    /// Its access key id.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: String,
}

/// Requests seen by the in-process server, as `"METHOD /path?query"` lines.
#[derive(Debug, Default)]
pub struct RequestLog {
    count: AtomicU64,
    lines: Mutex<Vec<String>>,
    bytes: Mutex<Vec<u64>>,
}

impl RequestLog {
    /// Number of requests received so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// A copy of every request line received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Every request line with the size of its body (`Content-Length`).
    pub fn entries(&self) -> Vec<(String, u64)> {
        let lines = self.lines.lock().unwrap().clone();
        let bytes = self.bytes.lock().unwrap().clone();
        lines.into_iter().zip(bytes).collect()
    }

    fn record(&self, line: String, body_bytes: u64) {
        self.count.fetch_add(1, Ordering::SeqCst);
        // One lock order for both vectors keeps them aligned.
        let mut lines = self.lines.lock().unwrap();
        lines.push(line);
        self.bytes.lock().unwrap().push(body_bytes);
    }
}

/// A running S3 endpoint for one test (in-process or external).
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// A bucket that exists on the server.
    pub bucket: String,
    /// Access key id accepted by the server.
    pub access_key: String,
    /// Secret key accepted by the server.
    pub secret_key: String,
    /// Region to sign requests for.
    pub region: String,
    /// Whether the server enforces conditional writes (`If-None-Match`,
    /// `If-Match`). s3s-fs does; Garage 2.5 ignores them
    /// (`PQSYNC_TEST_S3_CONDITIONAL=false`).
    pub conditional_writes: bool,
    /// Request log; `None` for an external server.
    pub log: Option<Arc<RequestLog>>,
    /// A second account with its own bucket (in-process server only).
    pub other: Option<Account>,
    /// A second bucket the same keys may use (`PQSYNC_TEST_S3_BUCKET2` on
    /// an external server).
    pub second_bucket: Option<String>,
    /// Directory the in-process server stores objects in.
    pub root: Option<std::path::PathBuf>,
    /// The most bytes the in-process server copies in one request.
    copy_limit: Option<Arc<AtomicU64>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl S3Server {
    /// Starts an in-process server, or connects to the external one named by
    /// `PQSYNC_TEST_S3_ENDPOINT`.
    pub fn start() -> Self {
        match std::env::var("PQSYNC_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => Self::external(endpoint),
            _ => Self::in_process(),
        }
    }

    /// Whether this is the in-process server (with a request log).
    pub fn is_in_process(&self) -> bool {
        self.log.is_some()
    }

    fn external(endpoint: String) -> Self {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        S3Server {
            endpoint,
            bucket: var("PQSYNC_TEST_S3_BUCKET", BUCKET),
            access_key: var("PQSYNC_TEST_S3_ACCESS_KEY", ACCESS_KEY),
            secret_key: var("PQSYNC_TEST_S3_SECRET_KEY", SECRET_KEY),
            region: var("PQSYNC_TEST_S3_REGION", "us-east-1"),
            conditional_writes: var("PQSYNC_TEST_S3_CONDITIONAL", "true") != "false",
            log: None,
            other: None,
            second_bucket: std::env::var("PQSYNC_TEST_S3_BUCKET2")
                .ok()
                .filter(|b| !b.is_empty()),
            root: None,
            copy_limit: None,
            shutdown: None,
            thread: None,
            _dir: None,
        }
    }

    /// Starts the s3s-fs server on a fresh temporary directory.
    pub fn in_process() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the S3 server");
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join(BUCKET)).expect("create bucket directory");
        std::fs::create_dir_all(root.join(OTHER_BUCKET)).expect("create bucket directory");
        std::fs::create_dir_all(root.join(SECOND_BUCKET)).expect("create bucket directory");
        let log = Arc::new(RequestLog::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_log = log.clone();
        let thread_root = root.clone();
        let copy_limit = Arc::new(AtomicU64::new(COPY_LIMIT));
        let thread_limit = copy_limit.clone();
        let thread = std::thread::Builder::new()
            .name("s3-test-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(serve(
                    thread_root,
                    thread_log,
                    thread_limit,
                    addr_tx,
                    stop_rx,
                ));
            })
            .expect("spawn server thread");
        let addr: std::net::SocketAddr = addr_rx.recv().expect("server address");
        S3Server {
            endpoint: format!("http://{addr}"),
            bucket: BUCKET.to_string(),
            access_key: ACCESS_KEY.to_string(),
            secret_key: SECRET_KEY.to_string(),
            region: "us-east-1".to_string(),
            conditional_writes: true,
            log: Some(log),
            other: Some(Account {
                bucket: OTHER_BUCKET.into(),
                access_key: OTHER_ACCESS_KEY.into(),
                secret_key: OTHER_SECRET_KEY.into(),
            }),
            second_bucket: Some(SECOND_BUCKET.into()),
            root: Some(root),
            copy_limit: Some(copy_limit),
            shutdown: Some(stop_tx),
            thread: Some(thread),
            _dir: Some(dir),
        }
    }

    /// A handle with the same endpoint and credentials but no ownership of
    /// the server (for pointing a client at a proxy in front of it).
    pub fn start_external_like(other: &S3Server) -> Self {
        S3Server {
            endpoint: other.endpoint.clone(),
            bucket: other.bucket.clone(),
            access_key: other.access_key.clone(),
            secret_key: other.secret_key.clone(),
            region: other.region.clone(),
            conditional_writes: other.conditional_writes,
            log: None,
            other: None,
            second_bucket: other.second_bucket.clone(),
            root: None,
            copy_limit: None,
            shutdown: None,
            thread: None,
            _dir: None,
        }
    }

    /// Makes the in-process server refuse, as S3 does above 5 GiB, to copy
    /// more than `bytes` in one request (no effect on an external server).
    pub fn limit_copies(&self, bytes: u64) {
        if let Some(limit) = &self.copy_limit {
            limit.store(bytes, Ordering::SeqCst);
        }
    }

    /// Requests received so far (0 for an external server).
    pub fn request_count(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.count())
    }

    /// The environment a `pqsync` process needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), self.region.clone()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    /// `s3://bucket/<prefix>` for a fresh, unique prefix on this server.
    pub fn unique_url(&self, name: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!(
            "s3://{}/t-{}-{}-{nanos}-{n}",
            self.bucket,
            name,
            std::process::id()
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Counting {
    inner: s3s::service::S3Service,
    log: Arc<RequestLog>,
    /// The buckets' directory: an object request to a bucket that is not
    /// there gets S3's `NoSuchBucket`, as from S3, R2 and Garage (s3s-fs
    /// alone would create the bucket on a PUT and say `NoSuchKey` on a GET).
    root: std::path::PathBuf,
    /// Held exclusively for the whole of every conditional request, and
    /// shared by every GET and HEAD. s3s-fs checks `If-Match`/`If-None-Match`
    /// and then writes, in two steps, so two conditional PUTs racing on one
    /// key could both pass; and a GET opens the object's file and only then
    /// reads its ETag from a second file, so a GET racing a PUT could answer
    /// the old bytes with the new ETag (a writer that then merges onto those
    /// bytes would drop the other writer's commit). S3 and R2 make both
    /// atomic, and so does this lock.
    conditional: Arc<tokio::sync::RwLock<()>>,
    /// The most bytes one CopyObject or UploadPartCopy takes.
    copy_limit: Arc<AtomicU64>,
}

impl Counting {
    /// S3's answer to a copy of more bytes than one request takes, if
    /// `req` is one.
    fn copy_too_large(&self, req: &http::Request<Incoming>) -> Option<s3s::HttpResponse> {
        if req.method() != http::Method::PUT {
            return None;
        }
        let source = req.headers().get("x-amz-copy-source")?.to_str().ok()?;
        let source = source.split('?').next()?.trim_start_matches('/');
        let source = percent_encoding::percent_decode_str(source).decode_utf8_lossy();
        if source.split('/').any(|p| p == "..") {
            return None;
        }
        let range = req
            .headers()
            .get("x-amz-copy-source-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some(b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?));
        let size = match range {
            Some(n) => n,
            None => std::fs::metadata(self.root.join(source.as_ref()))
                .ok()?
                .len(),
        };
        let limit = self.copy_limit.load(Ordering::SeqCst);
        (size > limit).then(|| {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidRequest</Code><Message>The specified copy source is larger than the maximum allowable size for a copy source: {limit}</Message></Error>"
            );
            http::Response::builder()
                .status(http::StatusCode::BAD_REQUEST)
                .header(http::header::CONTENT_TYPE, "application/xml")
                .body(s3s::Body::from(body))
                .expect("a valid response")
        })
    }
}

impl hyper::service::Service<http::Request<Incoming>> for Counting {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let line = format!(
            "{} {}",
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        let body_bytes = req
            .headers()
            .get("x-amz-decoded-content-length")
            .or_else(|| req.headers().get(http::header::CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.log.record(line, body_bytes);
        if let Some(bucket) = missing_bucket(&self.root, req.uri().path()) {
            return Box::pin(async move { Ok(no_such_bucket(&bucket)) });
        }
        if let Some(refused) = self.copy_too_large(&req) {
            return Box::pin(async move { Ok(refused) });
        }
        let exclusive = req.headers().contains_key(http::header::IF_MATCH)
            || req.headers().contains_key(http::header::IF_NONE_MATCH);
        let read = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        // s3s-fs ignores `If-None-Match` on a GET; S3, R2 and Garage answer
        // 304 Not Modified (no body) when the object still has that ETag.
        let unless = req
            .headers()
            .get(http::header::IF_NONE_MATCH)
            .filter(|_| read)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let lock = self.conditional.clone();
        // Run each request to completion even if the client goes away, as
        // S3 does: s3s-fs assembles a completed multipart upload in steps,
        // and cancelling it half-way would lose the upload.
        // S3 has no directories: once `a/b` is deleted, `a` can be stored.
        // s3s-fs keeps the empty directory `a/` and then cannot, so an empty
        // directory where an object is about to be written goes first.
        let object = req
            .uri()
            .path()
            .trim_start_matches('/')
            .split_once('/')
            .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty() && !key.contains(".."));
        if let (true, Some((bucket, key))) = (
            matches!(*req.method(), http::Method::PUT | http::Method::POST),
            object,
        ) {
            // The path is percent-encoded; the backing file is named by the
            // key itself.
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            if !key.split('/').any(|part| part == "..") {
                remove_if_only_empty_dirs(&self.root.join(bucket).join(key.as_ref()));
            }
        }
        let fut = hyper::service::Service::call(&self.inner, req);
        Box::pin(async move {
            let run = async move {
                // The body of a GET streams from the file it opened, after
                // the lock is let go: that file and its ETag belong together.
                let _exclusive = match exclusive {
                    true => Some(lock.clone().write_owned().await),
                    false => None,
                };
                let _shared = match read && !exclusive {
                    true => Some(lock.read_owned().await),
                    false => None,
                };
                fut.await
            };
            let answer = match tokio::spawn(run).await {
                Ok(r) => r,
                Err(e) => Err(s3s::HttpError::new(Box::new(e))),
            };
            match (answer, unless) {
                (Ok(r), Some(unless)) if r.status().is_success() && etag_matches(&r, &unless) => {
                    let etag = r.headers().get(http::header::ETAG).cloned();
                    let mut not_modified =
                        http::Response::builder().status(http::StatusCode::NOT_MODIFIED);
                    if let Some(etag) = etag {
                        not_modified = not_modified.header(http::header::ETAG, etag);
                    }
                    Ok(not_modified
                        .body(s3s::Body::empty())
                        .expect("a valid response"))
                }
                (answer, _) => answer,
            }
        })
    }
}

/// Whether `r`'s ETag is one that an `If-None-Match` of `unless` names.
fn etag_matches(r: &s3s::HttpResponse, unless: &str) -> bool {
    let Some(etag) = r
        .headers()
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let bare = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    unless.trim() == "*" || unless.split(',').any(|t| bare(t) == bare(etag))
}

/// Removes `dir` if it is a directory holding nothing but empty
/// directories.
fn remove_if_only_empty_dirs(dir: &std::path::Path) {
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            remove_if_only_empty_dirs(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The bucket an object request names, when that bucket does not exist.
fn missing_bucket(root: &std::path::Path, path: &str) -> Option<String> {
    let (bucket, key) = path.trim_start_matches('/').split_once('/')?;
    (!bucket.is_empty() && !key.is_empty() && !root.join(bucket).is_dir())
        .then(|| bucket.to_string())
}

/// S3's answer to a request for a bucket that does not exist.
fn no_such_bucket(bucket: &str) -> s3s::HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>{bucket}</BucketName></Error>"
    );
    http::Response::builder()
        .status(http::StatusCode::NOT_FOUND)
        .header(http::header::CONTENT_TYPE, "application/xml")
        .body(s3s::Body::from(body))
        .expect("a valid response")
}

/// Each key may use only its own account's bucket.
struct BucketPerKey;

#[async_trait::async_trait]
impl s3s::access::S3Access for BucketPerKey {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        let Some(key) = cx.credentials().map(|c| c.access_key.clone()) else {
            return Err(s3s::s3_error!(AccessDenied, "Signature is required"));
        };
        let bucket = match cx.s3_path() {
            s3s::path::S3Path::Root => return Ok(()),
            s3s::path::S3Path::Bucket { bucket } | s3s::path::S3Path::Object { bucket, .. } => {
                bucket.to_string()
            }
        };
        let own = if key == OTHER_ACCESS_KEY {
            OTHER_BUCKET
        } else {
            BUCKET
        };
        if bucket == own || (own == BUCKET && bucket != OTHER_BUCKET) {
            Ok(())
        } else {
            Err(s3s::s3_error!(
                AccessDenied,
                "this key may not use bucket {bucket}"
            ))
        }
    }
}

async fn serve(
    root: std::path::PathBuf,
    log: Arc<RequestLog>,
    copy_limit: Arc<AtomicU64>,
    addr_tx: std::sync::mpsc::Sender<std::net::SocketAddr>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs root");
    let buckets = root.clone();
    let mut builder = S3ServiceBuilder::new(fs);
    let mut auth = SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY);
    auth.register(OTHER_ACCESS_KEY.into(), OTHER_SECRET_KEY.into());
    builder.set_auth(auth);
    builder.set_access(BucketPerKey);
    let service = Counting {
        inner: builder.build(),
        log,
        root: buckets,
        conditional: Arc::new(tokio::sync::RwLock::new(())),
        copy_limit,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    addr_tx
        .send(listener.local_addr().expect("local addr"))
        .expect("report address");
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            res = listener.accept() => match res {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
