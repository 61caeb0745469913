//! One process-wide budget of answer bytes held at once.
//!
//! Every query reserves its body's size here before reading it (the `Content-Length`, or the
//! body cap when the length is unknown) and keeps the reservation until the body is parsed and
//! dropped. However many runs, metrics and Prometheus servers there are, the bodies held at
//! once never add up to more than [`ANSWER_BYTES_BUDGET`]; a query that cannot get its share
//! waits, and the wait counts against its own deadline.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

use super::prometheus::MAX_BODY_BYTES;

/// Answer bytes all queries of the process may hold at once (bodies being read or parsed).
/// The controller runs in a 256 MiB container and needs about 185 MiB for 10,000 Rollouts
/// (benches/README.md). Parsing an answer costs at most about 1.5 times its body on top of
/// the body, with the per-answer caps (measured in `benches/measurement.rs`; without the
/// caps one 8 MiB answer cost 56-70 MiB), so 32 MiB of bodies cost at most about 80 MiB at
/// peak. Without the budget, 50 metrics pointed at 50 servers put 100-200 answers of 8 MiB in
/// flight at once: gigabytes. It holds four answers of the largest size ([`MAX_BODY_BYTES`]),
/// or thousands of the usual few-kilobyte ones.
pub const ANSWER_BYTES_BUDGET: usize = 32 << 20;

const _: () = assert!(MAX_BODY_BYTES <= ANSWER_BYTES_BUDGET);
const _: () = assert!(ANSWER_BYTES_BUDGET <= u32::MAX as usize);

/// The bytes every query may reserve; one permit is one byte.
static BUDGET: Semaphore = Semaphore::const_new(ANSWER_BYTES_BUDGET);

/// Answer bytes actually buffered right now (not reserved: read).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The most answer bytes ever buffered at once in this process.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

/// Answer bytes buffered right now, all queries of the process together.
pub fn answer_bytes_held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// The most answer bytes buffered at once since the process started. It never exceeds
/// [`ANSWER_BYTES_BUDGET`]: that is what the budget is for.
pub fn answer_bytes_high_water() -> usize {
    HIGH_WATER.load(Ordering::Relaxed)
}

/// A body being read, with its reservation. Dropping it returns the bytes to the budget.
#[derive(Debug)]
pub(crate) struct BudgetedBody {
    bytes: Vec<u8>,
    reserved: usize,
    permit: SemaphorePermit<'static>,
}

/// The body would grow past its reservation (the declared length or the cap).
#[derive(Debug)]
pub(crate) struct OverReservation;

impl BudgetedBody {
    /// Waits until `size` bytes of the budget are free and reserves them. The whole size is
    /// taken at once: growing a reservation while reading could deadlock queries that each
    /// hold part of what the others need.
    pub(crate) async fn reserve(size: usize) -> BudgetedBody {
        let size = size.min(ANSWER_BYTES_BUDGET);
        // `size` fits in u32 (checked above) and the static semaphore is never closed.
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let permit = match BUDGET.acquire_many(permits).await {
            Ok(permit) => permit,
            // Nobody closes this static semaphore. Were it ever closed, reading without a
            // reservation would lift the bound: wait instead, until the query's deadline.
            Err(_closed) => std::future::pending().await,
        };
        BudgetedBody {
            bytes: Vec::new(),
            reserved: size,
            permit,
        }
    }

    /// Appends a chunk read from the wire, refusing to grow past the reservation.
    pub(crate) fn extend(&mut self, chunk: &[u8]) -> Result<(), OverReservation> {
        let grown = self.bytes.len().saturating_add(chunk.len());
        if grown > self.reserved {
            return Err(OverReservation);
        }
        self.bytes.extend_from_slice(chunk);
        let held = HELD.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
        HIGH_WATER.fetch_max(held, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back the part of the reservation the body did not use (an answer without
    /// `Content-Length` reserved the whole cap).
    pub(crate) fn release_unused(&mut self) {
        let unused = self.reserved - self.bytes.len();
        if let Some(spare) = self.permit.split(unused) {
            drop(spare);
            self.reserved = self.bytes.len();
        }
    }

    /// The bytes read so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for BudgetedBody {
    fn drop(&mut self) {
        HELD.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}
