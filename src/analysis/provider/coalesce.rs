//! Coalesced queries: identical queries from many AnalysisRuns in one tick are sent once and
//! the answer is shared.
//!
//! Two calls are identical when they go to the same address with the same credential identity
//! (a keyed hash of everything that authenticates or shapes the call, never the secrets
//! themselves: different credentials may see different data), the same API path and the same
//! parameters, evaluation times bucketed to [`DEFAULT_COALESCE_BUCKET`] (or the bucket the
//! process configures, at most [`MAX_COALESCE_BUCKET`]). The first caller starts the request,
//! evaluated at the time it asked for (never its bucket's start: a floored time can fall
//! before a new series' first sample and find no data); the others wait for its answer, a
//! copy of the same typed [`Measurement`] or error. An entry
//! lives only while someone waits for it: the map holds requests in flight, never a cache, and
//! at most [`MAX_IN_FLIGHT_KEYS`] of them (past that, calls go out uncoalesced).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use jiff::Timestamp;

use super::measurement::{Measurement, ProviderError, error_chain};

/// Evaluation times are bucketed to this by default: calls made within the same second for
/// the same query share one request (a scrape interval is 15 s or more, so the
/// answer is the same one).
pub const DEFAULT_COALESCE_BUCKET: Duration = Duration::from_secs(1);

/// The widest bucket a process may configure: a caller that shares another's request gets
/// an answer evaluated at most this far from the time it asked for.
pub const MAX_COALESCE_BUCKET: Duration = Duration::from_secs(10);

/// The most distinct requests tracked in flight at once. Each costs its key (the query text,
/// bounded by the template limits) and a shared future; past this, calls go out uncoalesced
/// rather than grow the map.
pub const MAX_IN_FLIGHT_KEYS: usize = 4096;

/// Who authenticates a call, as a keyed hash: two clients share answers only when every
/// credential, header and TLS root they send (and the limits that shape the answer) match.
/// The key is random per process, so the identity says nothing about a secret outside it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialIdentity([u64; 2]);

impl std::fmt::Debug for CredentialIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialIdentity(..)")
    }
}

impl CredentialIdentity {
    /// The identity of everything `feed` writes. SipHash keyed with two random 128-bit keys
    /// (a PRF), so nobody can find two credential sets that collide without the keys.
    pub fn of(feed: impl Fn(&mut dyn Hasher)) -> CredentialIdentity {
        static KEYS: OnceLock<[RandomState; 2]> = OnceLock::new();
        let keys = KEYS.get_or_init(|| [RandomState::new(), RandomState::new()]);
        let half = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            feed(&mut hasher);
            hasher.finish()
        };
        CredentialIdentity([half(&keys[0]), half(&keys[1])])
    }
}

/// What makes two calls the same call. Holds the query text: never logged (no `Debug`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct QueryKey {
    address: String,
    credentials: CredentialIdentity,
    path: &'static str,
    params: Vec<(&'static str, String)>,
}

impl QueryKey {
    /// The key of a call to `path` below `address` with `params` (times already bucketed).
    pub fn new(
        address: &str,
        credentials: CredentialIdentity,
        path: &'static str,
        params: &[(&'static str, String)],
    ) -> QueryKey {
        QueryKey {
            address: address.to_owned(),
            credentials,
            path,
            params: params.to_vec(),
        }
    }
}

/// How a call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// It sent the request; others may have shared its answer.
    Leader,
    /// Another call's request in flight answered it.
    Follower,
    /// Too many requests in flight to track: it went out on its own.
    Uncoalesced,
}

type Answer = Result<Measurement, ProviderError>;
type InFlightAnswer = Shared<BoxFuture<'static, Arc<Answer>>>;

struct Entry {
    answer: InFlightAnswer,
    waiters: usize,
}

type InFlight = Arc<Mutex<HashMap<QueryKey, Entry>>>;

/// The process-wide single-flight map. Clone it freely: clones share the map.
#[derive(Clone)]
pub struct Coalescer {
    bucket: Duration,
    in_flight: InFlight,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("bucket", &self.bucket)
            .field("in_flight", &self.in_flight_keys())
            .finish()
    }
}

impl Default for Coalescer {
    fn default() -> Coalescer {
        Coalescer::new(DEFAULT_COALESCE_BUCKET)
    }
}

impl Coalescer {
    /// A map bucketing evaluation times to `bucket` (clamped to 1 ms ..= [`MAX_COALESCE_BUCKET`]).
    pub fn new(bucket: Duration) -> Coalescer {
        Coalescer {
            bucket: bucket.clamp(Duration::from_millis(1), MAX_COALESCE_BUCKET),
            in_flight: Arc::default(),
        }
    }

    /// The evaluation-time bucket.
    pub fn bucket(&self) -> Duration {
        self.bucket
    }

    /// `at` floored to the bucket: what identical calls in the bucket share as their key (the
    /// request itself is evaluated at its first caller's own time).
    pub fn bucketed(&self, at: Timestamp) -> Timestamp {
        let bucket = i64::try_from(self.bucket.as_millis()).unwrap_or(1).max(1);
        let floored = at.as_millisecond().div_euclid(bucket) * bucket;
        Timestamp::from_millisecond(floored).unwrap_or(at)
    }

    /// Requests in flight now (distinct keys).
    pub fn in_flight_keys(&self) -> usize {
        lock(&self.in_flight).len()
    }

    /// The answer to the call `key`: the answer of the same call already in flight, or of the
    /// request `start` makes. The request runs while anyone waits for it; when the last waiter
    /// goes (answered or cancelled), its entry goes too.
    pub async fn run(
        &self,
        key: QueryKey,
        start: impl FnOnce() -> BoxFuture<'static, Answer>,
    ) -> (Answer, Joined) {
        let joined = {
            let mut in_flight = lock(&self.in_flight);
            if let Some(entry) = in_flight.get_mut(&key) {
                entry.waiters += 1;
                Ok((entry.answer.clone(), Joined::Follower))
            } else if in_flight.len() >= MAX_IN_FLIGHT_KEYS {
                Err(start)
            } else {
                let answer = start().map(Arc::new).boxed().shared();
                let entry = Entry {
                    answer: answer.clone(),
                    waiters: 1,
                };
                in_flight.insert(key.clone(), entry);
                Ok((answer, Joined::Leader))
            }
        };
        let (answer, joined) = match joined {
            Ok(joined) => joined,
            Err(start) => return (start().await, Joined::Uncoalesced),
        };
        let _waiter = Waiter {
            in_flight: self.in_flight.clone(),
            key,
        };
        let answer = answer.await;
        (copy_answer(&answer), joined)
    }
}

/// One waiter of an entry; the last to go removes it (so a cancelled reconcile never leaves
/// an entry behind).
struct Waiter {
    in_flight: InFlight,
    key: QueryKey,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.in_flight);
        if let Some(entry) = in_flight.get_mut(&self.key) {
            entry.waiters = entry.waiters.saturating_sub(1);
            if entry.waiters == 0 {
                in_flight.remove(&self.key);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map is still a valid map: a panic elsewhere must not stop measuring.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn copy_answer(answer: &Answer) -> Answer {
    match answer {
        Ok(measurement) => Ok(measurement.clone()),
        Err(error) => Err(copy_error(error)),
    }
}

/// The cause of a shared connection error, as text (the original is not `Clone`).
#[derive(Debug)]
struct SharedCause(String);

impl std::fmt::Display for SharedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SharedCause {}

/// A copy of `error` for each caller that shared its request: the same variant and text.
fn copy_error(error: &ProviderError) -> ProviderError {
    use ProviderError as E;
    match error {
        E::Unreachable {
            address,
            attempts,
            source,
        } => E::Unreachable {
            address: address.clone(),
            attempts: *attempts,
            source: Box::new(SharedCause(error_chain(source.as_ref()))),
        },
        E::Timeout { after, attempts } => E::Timeout {
            after: *after,
            attempts: *attempts,
        },
        E::HttpStatus {
            status,
            body_excerpt,
            attempts,
        } => E::HttpStatus {
            status: *status,
            body_excerpt: body_excerpt.clone(),
            attempts: *attempts,
        },
        E::PrometheusError { error_type, error } => E::PrometheusError {
            error_type: error_type.clone(),
            error: error.clone(),
        },
        E::MalformedBody { detail } => E::MalformedBody {
            detail: detail.clone(),
        },
        E::UnexpectedResultType { expected, got } => E::UnexpectedResultType {
            expected,
            got: *got,
        },
        E::TooManySeries {
            expected,
            got,
            series,
        } => E::TooManySeries {
            expected: *expected,
            got: *got,
            series: series.clone(),
        },
        E::Redirected { status, location } => E::Redirected {
            status: *status,
            location: location.clone(),
        },
        E::BodyTooLarge { limit } => E::BodyTooLarge { limit: *limit },
        E::RefuseDestination(refused) => E::RefuseDestination(refused.clone()),
        E::RefuseAddress { field, refused } => E::RefuseAddress {
            field,
            refused: refused.clone(),
        },
        E::NotJson { detail } => E::NotJson {
            detail: detail.clone(),
        },
        E::NoValueAtPath { path, excerpt } => E::NoValueAtPath {
            path: path.clone(),
            excerpt: excerpt.clone(),
        },
        E::TooManySeriesInAnswer { limit, got } => E::TooManySeriesInAnswer {
            limit: *limit,
            got: *got,
        },
        E::AnswerOverCap { cap, limit } => E::AnswerOverCap {
            cap: *cap,
            limit: *limit,
        },
        E::InvalidConfig { detail } => E::InvalidConfig {
            detail: detail.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(query: &str, credentials: CredentialIdentity) -> QueryKey {
        QueryKey::new(
            "http://prometheus:9090/",
            credentials,
            "api/v1/query",
            &[("query", query.to_owned()), ("time", "1".to_owned())],
        )
    }

    fn identity(token: &str) -> CredentialIdentity {
        CredentialIdentity::of(|mut hasher| token.hash(&mut hasher))
    }

    #[test]
    fn times_are_floored_to_the_bucket() {
        let coalescer = Coalescer::new(Duration::from_secs(5));
        let at = Timestamp::from_millisecond(1_700_000_003_900).expect("ts");
        assert_eq!(coalescer.bucketed(at).as_millisecond(), 1_700_000_000_000);
        let default = Coalescer::default();
        assert_eq!(default.bucketed(at).as_millisecond(), 1_700_000_003_000);
        // A configured bucket cannot move a query further than the ceiling.
        assert_eq!(
            Coalescer::new(Duration::from_secs(3600)).bucket(),
            MAX_COALESCE_BUCKET
        );
    }

    #[test]
    fn credential_identities_differ_with_the_credentials_and_hide_them() {
        assert_eq!(identity("a"), identity("a"));
        assert_ne!(identity("a"), identity("b"));
        assert!(!format!("{:?}", identity("s3cr3t")).contains("s3cr3t"));
    }

    #[tokio::test]
    async fn one_request_answers_every_identical_call_and_its_entry_goes_with_the_last() {
        let coalescer = Coalescer::default();
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = released.shared();
        let call = |query: &'static str, who: CredentialIdentity| {
            let started = started.clone();
            let released = released.clone();
            let coalescer = coalescer.clone();
            async move {
                coalescer
                    .run(key(query, who), move || {
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async move {
                            let _ = released.await;
                            Err(ProviderError::MalformedBody {
                                detail: query.to_owned(),
                            })
                        }
                        .boxed()
                    })
                    .await
            }
        };
        let calls = futures::future::join_all([
            call("up", identity("a")).boxed(),
            call("up", identity("a")).boxed(),
            call("up", identity("b")).boxed(),
            call("down", identity("a")).boxed(),
            async move {
                tokio::task::yield_now().await;
                let _ = release.send(());
                (
                    Ok(Measurement::NoData {
                        result_type: crate::analysis::provider::ResultType::Vector,
                    }),
                    Joined::Leader,
                )
            }
            .boxed(),
        ]);
        let answers = calls.await;
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 3);
        let joined: Vec<Joined> = answers.iter().take(4).map(|(_, j)| *j).collect();
        assert_eq!(
            joined,
            [
                Joined::Leader,
                Joined::Follower,
                Joined::Leader,
                Joined::Leader
            ]
        );
        for (answer, _) in answers.iter().take(2) {
            assert!(
                matches!(answer, Err(ProviderError::MalformedBody { detail }) if detail == "up")
            );
        }
        assert_eq!(coalescer.in_flight_keys(), 0, "entries live only in flight");
    }

    #[tokio::test]
    async fn a_cancelled_caller_leaves_no_entry_behind() {
        let coalescer = Coalescer::default();
        let pending = coalescer.run(key("up", identity("a")), || {
            futures::future::pending::<Answer>().boxed()
        });
        let timed_out = tokio::time::timeout(Duration::from_millis(20), pending).await;
        assert!(timed_out.is_err());
        assert_eq!(coalescer.in_flight_keys(), 0);
    }

    #[test]
    fn a_shared_connection_error_keeps_its_variant_and_text() {
        let original = ProviderError::Unreachable {
            address: "http://p:9090/".into(),
            attempts: 3,
            source: Box::new(SharedCause("connection refused".into())),
        };
        let copy = copy_error(&original);
        assert!(matches!(
            copy,
            ProviderError::Unreachable { attempts: 3, .. }
        ));
        assert_eq!(copy.to_string(), original.to_string());
    }
}
