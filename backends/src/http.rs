//! The HTTP connector every cloud store is built with: it tells an
//! [`HttpObserver`] about responses and stalls, and cuts requests that stall.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService, ReqwestConnector,
};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

/// Told about the HTTP traffic of a store, for example to lower concurrency
/// when a store answers 429 or 503, or to say which endpoint is not
/// answering.
///
/// Methods are called on the request's task, so they must return quickly
/// and must not block. Both have no-op defaults. Any `Fn(u16)` closure is an
/// observer of statuses alone.
pub trait HttpObserver: Send + Sync {
    /// Every HTTP response status, including those of requests that will be
    /// retried.
    fn response(&self, _status: u16) {}

    /// A request to `endpoint` (`scheme://host:port`) got no answer within
    /// the stall timeout (see [`OpenOptions::timeout`](crate::OpenOptions::timeout)),
    /// or its response body stopped for that long, and will be retried (or
    /// has failed): `waited` is how long this attempt waited. Also called
    /// when connecting timed out.
    fn stalled(&self, _endpoint: &str, _waited: Duration) {}
}

impl<F: Fn(u16) + Send + Sync> HttpObserver for F {
    fn response(&self, status: u16) {
        self(status)
    }
}

/// An HTTP connector that reports every response status and every timed-out
/// request to `observer`, wrapping object_store's default (reqwest) client
/// built from the store's own [`ClientOptions`] (so their timeouts and
/// `allow_http` apply). Unlike the stores [`open`](crate::open) builds, it
/// adds no timeouts of its own: `stalled` is called when one of the
/// `ClientOptions` timeouts fires.
pub fn observing_connector(observer: Arc<dyn HttpObserver>) -> impl HttpConnector {
    Connector {
        observer: Some(observer),
        stall: None,
    }
}

/// A body is allowed this many bytes per second on top of the stall timeout
/// before its request counts as stalled: reqwest cannot tell how far an
/// upload has got, so a slow uplink must not be mistaken for a silent
/// server.
pub(crate) const MIN_UPLOAD_RATE: u64 = 32 * 1024;

/// The time limits derived from one `--timeout`; see
/// [`OpenOptions::timeout`](crate::OpenOptions::timeout).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Limit on establishing a connection.
    pub connect: Duration,
    /// How long a request may go without an answer (or a response body
    /// without bytes).
    pub stall: Duration,
    /// After this long, failed attempts are no longer retried.
    pub retry_timeout: Duration,
}

impl Budget {
    /// The budget for a timeout, raised to at least a second.
    pub fn new(timeout: Duration) -> Self {
        let timeout = timeout.max(Duration::from_secs(1));
        Budget {
            connect: timeout.min(Duration::from_secs(5)),
            stall: timeout / 4,
            retry_timeout: timeout * 2 / 3,
        }
    }

    /// The retry policy: exponential backoff from 100 ms doubling to at most
    /// 15 s, at most 10 retries, none started after `retry_timeout`.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: 10,
            retry_timeout: self.retry_timeout,
        }
    }
}

/// Builds [`Observing`] clients.
#[derive(Clone)]
pub(crate) struct Connector {
    pub observer: Option<Arc<dyn HttpObserver>>,
    /// When set, the connector enforces this stall limit itself and turns
    /// off reqwest's whole-request and read timeouts: reqwest's read timeout
    /// runs from the start of the request until the response headers, body
    /// upload included, so it would cut a slow upload.
    pub stall: Option<Duration>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("observer", &self.observer.is_some())
            .field("stall", &self.stall)
            .finish()
    }
}

impl HttpConnector for Connector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = match self.stall {
            Some(_) => ReqwestConnector::default().connect(
                &options
                    .clone()
                    .with_timeout_disabled()
                    .with_read_timeout_disabled(),
            )?,
            None => ReqwestConnector::default().connect(options)?,
        };
        Ok(HttpClient::new(Observing {
            inner,
            observer: self.observer.clone(),
            stall: self.stall,
        }))
    }
}

struct Observing {
    inner: HttpClient,
    observer: Option<Arc<dyn HttpObserver>>,
    stall: Option<Duration>,
}

impl std::fmt::Debug for Observing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observing")
            .field("stall", &self.stall)
            .finish()
    }
}

#[async_trait::async_trait]
impl HttpService for Observing {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let uri = req.uri();
        let scheme = uri.scheme_str().unwrap_or("https");
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let endpoint = format!("{scheme}://{}:{port}", uri.host().unwrap_or_default());
        let started = Instant::now();
        let result = match self.stall {
            None => self.inner.execute(req).await,
            Some(stall) => {
                let limit = stall + upload_allowance(req.body().content_length());
                match tokio::time::timeout(limit, self.inner.execute(req)).await {
                    Ok(r) => r,
                    Err(_) => Err(HttpError::new(
                        HttpErrorKind::Timeout,
                        Stalled {
                            endpoint: endpoint.clone(),
                            waited: limit,
                            body: false,
                        },
                    )),
                }
            }
        };
        match result {
            Ok(resp) => {
                if let Some(o) = &self.observer {
                    o.response(resp.status().as_u16());
                }
                let Some(stall) = self.stall else {
                    return Ok(resp);
                };
                let (parts, body) = resp.into_parts();
                let body = StallBody {
                    inner: body,
                    stall,
                    timer: None,
                    endpoint,
                    observer: self.observer.clone(),
                };
                Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
            }
            Err(e) => {
                if e.kind() == HttpErrorKind::Timeout {
                    if let Some(o) = &self.observer {
                        o.stalled(&endpoint, started.elapsed());
                    }
                }
                Err(e)
            }
        }
    }
}

/// Extra time a request body of `len` bytes gets before its answer is late.
fn upload_allowance(len: usize) -> Duration {
    Duration::from_secs_f64(len as f64 / MIN_UPLOAD_RATE as f64)
}

/// The error of a stalled request or response body.
#[derive(Debug)]
struct Stalled {
    endpoint: String,
    waited: Duration,
    /// Whether the response body stopped (rather than no response coming).
    body: bool,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waited = self.waited.as_secs_f64();
        if self.body {
            write!(
                f,
                "response body from {} stopped for {waited:.1}s",
                self.endpoint
            )
        } else {
            write!(f, "no response from {} for {waited:.1}s", self.endpoint)
        }
    }
}

impl std::error::Error for Stalled {}

/// A response body that fails with a timeout when its reader has waited
/// `stall` for the next bytes. Only time spent waiting counts: a reader that
/// pauses between reads is not cut.
struct StallBody {
    inner: HttpResponseBody,
    stall: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    endpoint: String,
    observer: Option<Arc<dyn HttpObserver>>,
}

impl Body for StallBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.timer = None;
            return Poll::Ready(frame);
        }
        let stall = this.stall;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.timer = None;
        if let Some(o) = &this.observer {
            o.stalled(&this.endpoint, stall);
        }
        Poll::Ready(Some(Err(HttpError::new(
            HttpErrorKind::Timeout,
            Stalled {
                endpoint: this.endpoint.clone(),
                waited: stall,
                body: true,
            },
        ))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn closures_observe_statuses() {
        let seen = Arc::new(AtomicU16::new(0));
        let s = seen.clone();
        let observer: Arc<dyn HttpObserver> =
            Arc::new(move |status| s.store(status, Ordering::Relaxed));
        observer.response(503);
        observer.stalled("https://example.com:443", Duration::from_secs(1));
        assert_eq!(seen.load(Ordering::Relaxed), 503);
        let _connector = observing_connector(observer);
    }

    #[test]
    fn budget_adds_up() {
        let b = Budget::new(Duration::from_secs(30));
        assert_eq!(b.connect, Duration::from_secs(5));
        assert_eq!(b.stall, Duration::from_millis(7500));
        assert_eq!(b.retry_timeout, Duration::from_secs(20));
        let r = b.retry_config();
        assert_eq!(r.max_retries, 10);
        assert_eq!(r.retry_timeout, Duration::from_secs(20));
        // Three silent attempts and two short backoffs fit in the timeout.
        assert!(b.stall * 3 + Duration::from_millis(100 + 200) < Duration::from_secs(30));
        let b = Budget::new(Duration::from_secs(2));
        assert_eq!(b.connect, Duration::from_secs(2));
        assert_eq!(b.stall, Duration::from_millis(500));
        assert_eq!(
            Budget::new(Duration::ZERO).stall,
            Duration::from_millis(250)
        );
        assert_eq!(upload_allowance(8 * 1024 * 1024), Duration::from_secs(256));
        assert_eq!(upload_allowance(0), Duration::ZERO);
    }

    struct ChannelBody(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = HttpError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[derive(Default)]
    struct Stalls(Mutex<Vec<(String, Duration)>>);

    impl HttpObserver for Stalls {
        fn stalled(&self, endpoint: &str, waited: Duration) {
            self.0.lock().unwrap().push((endpoint.into(), waited));
        }
    }

    async fn next(body: &mut StallBody) -> Option<Result<Bytes, HttpError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|f| f.map(|f| f.into_data().unwrap()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_is_cut_but_a_slow_reader_is_not() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stalls = Arc::new(Stalls::default());
        let mut body = StallBody {
            inner: HttpResponseBody::new(ChannelBody(rx)),
            stall: Duration::from_secs(1),
            timer: None,
            endpoint: "https://example.com:443".into(),
            observer: Some(stalls.clone()),
        };
        tx.send(Bytes::from_static(b"a")).unwrap();
        tx.send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(next(&mut body).await.unwrap().unwrap(), "a");
        // The reader pausing far longer than the stall limit is not a stall.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(next(&mut body).await.unwrap().unwrap(), "b");
        // Bytes that come within the limit are waited for.
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(900)).await;
            late.send(Bytes::from_static(b"c")).unwrap();
        });
        let waiting = tokio::time::Instant::now();
        assert_eq!(next(&mut body).await.unwrap().unwrap(), "c");
        assert_eq!(waiting.elapsed(), Duration::from_millis(900));
        // Silence for the limit fails the body with a timeout.
        let waiting = tokio::time::Instant::now();
        let err = next(&mut body).await.unwrap().unwrap_err();
        assert_eq!(waiting.elapsed(), Duration::from_secs(1));
        assert_eq!(err.kind(), HttpErrorKind::Timeout);
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "response body from https://example.com:443 stopped for 1.0s"
        );
        assert_eq!(
            *stalls.0.lock().unwrap(),
            [(
                "https://example.com:443".to_string(),
                Duration::from_secs(1)
            )]
        );
        drop(tx);
    }
}
