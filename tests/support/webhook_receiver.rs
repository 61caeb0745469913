//! A webhook receiver on 127.0.0.1: it records every JSON payload that arrives (with its
//! path) and answers what the test tells it, per path: a status code, or nothing at all (the
//! request is held open, as a hung receiver would).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the receiver does with a request to a path.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// Answer with this HTTP status.
    Status(u16),
    /// Hold the request open without answering (for ten minutes).
    Hang,
}

#[derive(Default)]
struct State {
    answers: Mutex<HashMap<String, Answer>>,
    received: Mutex<Vec<(String, serde_json::Value)>>,
    held: AtomicUsize,
    first_held_at: Mutex<Option<Instant>>,
}

/// A running receiver; stops accepting when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that answers 404 to every path not told otherwise.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { base, state, task }
    }

    /// The URL of `path` (starting with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// From now on, requests to `path` get `answer`.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.state
            .answers
            .lock()
            .expect("lock")
            .insert(path.to_owned(), answer);
    }

    /// The payloads that arrived at `path`, in order.
    pub fn received(&self, path: &str) -> Vec<serde_json::Value> {
        self.state
            .received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// When the first request that was held open arrived.
    pub fn first_held_at(&self) -> Option<Instant> {
        *self.state.first_held_at.lock().expect("lock")
    }

    /// Requests being held open right now.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decrements the held count when the held request ends (answered or dropped).
struct Held(Arc<State>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let body = Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    state
        .received
        .lock()
        .expect("lock")
        .push((path.clone(), json));
    let answer = state
        .answers
        .lock()
        .expect("lock")
        .get(&path)
        .copied()
        .unwrap_or(Answer::Status(404));
    let status = match answer {
        Answer::Status(status) => status,
        Answer::Hang => {
            state.held.fetch_add(1, Ordering::SeqCst);
            state
                .first_held_at
                .lock()
                .expect("lock")
                .get_or_insert_with(Instant::now);
            let _held = Held(state.clone());
            tokio::time::sleep(Duration::from_secs(600)).await;
            504
        }
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"")));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a status code");
    Ok(response)
}
