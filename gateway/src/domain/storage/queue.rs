//! A bounded queue in front of a table, written by one background task in batches: for rows
//! produced on the request path (decision log entries) that must never make a request wait on
//! the database.
//!
//! [`Queue::push`] never blocks: when the writer falls behind and the queue is full, the row is
//! dropped, counted ([`Queue::dropped`]) and reported in the log (the first drop, then every
//! 1024th). The writer takes whatever is queued, up to a batch, and writes it in one call to
//! its [`Sink`], retrying twice; a batch still failing is reported and dropped, so a database
//! outage cannot stall the queue forever. Between batches that were not full it lingers a
//! moment ([`LINGER`]), so a steady trickle of rows is written in batches and does not wake it
//! once per row.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

/// Largest number of rows handed to the sink at once.
const BATCH: usize = 256;
/// After a batch that was not full, the writer waits this long before looking again, so rows
/// produced meanwhile arrive without waking it: a writer parked on the queue is woken (a
/// cross-thread wake-up, a syscall) by every row pushed, which on the request path of a busy
/// gateway costs more than the row itself.
const LINGER: Duration = Duration::from_millis(20);

/// Where a queue's rows go.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    type Row: Send + 'static;
    /// Write the rows (in one transaction, idempotently: a retried batch must not duplicate).
    async fn write(&self, rows: &[Self::Row]) -> Result<(), String>;
}

enum Msg<R> {
    Row(R),
    /// Answered once everything queued before it has been written (or given up on).
    Flush(oneshot::Sender<()>),
}

/// The producing side. Share it behind an `Arc`.
pub struct Queue<R> {
    tx: mpsc::Sender<Msg<R>>,
    dropped: AtomicU64,
    /// What the rows are, for the log (`decision log`).
    what: &'static str,
}

impl<R> fmt::Debug for Queue<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("what", &self.what)
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The writer was gone before a flush was answered.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the writer has stopped")]
pub struct Closed;

impl<R: Send + 'static> Queue<R> {
    /// A queue of at most `capacity` rows and the writer that drains it into `sink`; run the
    /// writer on whichever runtime owns background work (rows queue until it runs).
    pub fn new<S: Sink<Row = R>>(
        sink: S,
        capacity: usize,
        what: &'static str,
    ) -> (Queue<R>, Writer<S>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Queue {
                tx,
                dropped: AtomicU64::new(0),
                what,
            },
            Writer { sink, rx, what },
        )
    }

    /// Queue a row; never blocks. Returns false when it was dropped.
    pub fn push(&self, row: R) -> bool {
        if self.tx.try_send(Msg::Row(row)).is_ok() {
            return true;
        }
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped == 1 || dropped % 1024 == 0 {
            tracing::warn!(
                target: "zonegate::storage",
                event = "queue_dropped",
                queue = self.what,
                dropped,
                "queue full or writer stopped: rows dropped, not stored"
            );
        }
        false
    }

    /// Rows dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait until every row queued before this call has been written (or given up on). Waits
    /// for queue space, unlike [`Queue::push`]: for tests and shutdown.
    pub async fn flush(&self) -> Result<(), Closed> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Flush(done)).await.map_err(|_| Closed)?;
        wait.await.map_err(|_| Closed)
    }
}

/// The consuming side of a [`Queue`].
pub struct Writer<S: Sink> {
    sink: S,
    rx: mpsc::Receiver<Msg<S::Row>>,
    what: &'static str,
}

impl<S: Sink> fmt::Debug for Writer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl<S: Sink> Writer<S> {
    /// Write queued rows until the queue is dropped and drained.
    pub async fn run(mut self) {
        let mut batch: Vec<S::Row> = Vec::with_capacity(BATCH);
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        while let Some(first) = self.rx.recv().await {
            let mut next = Some(first);
            // Take whatever else is queued, up to a batch: a burst costs one transaction.
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Row(r) => batch.push(r),
                    Msg::Flush(done) => flushes.push(done),
                }
                if batch.len() < BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            let full = batch.len() >= BATCH;
            self.write(&mut batch).await;
            let flushed = !flushes.is_empty();
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            if !full && !flushed {
                tokio::time::sleep(LINGER).await;
            }
        }
    }

    async fn write(&self, batch: &mut Vec<S::Row>) {
        if batch.is_empty() {
            return;
        }
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=3 {
            match self.sink.write(batch).await {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    tracing::warn!(target: "zonegate::storage", event = "queue_write_retry", queue = self.what, error = %e, attempt);
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(e) => tracing::error!(
                    target: "zonegate::storage",
                    event = "queue_write_fail",
                    queue = self.what,
                    error = %e,
                    lost = batch.len(),
                    "rows not stored"
                ),
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Collect(Arc<Mutex<Vec<Vec<u32>>>>);

    #[async_trait]
    impl Sink for Collect {
        type Row = u32;
        async fn write(&self, rows: &[u32]) -> Result<(), String> {
            self.0.lock().unwrap().push(rows.to_vec());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_and_the_writer_batches_the_rest() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (queue, writer) = Queue::new(Collect(seen.clone()), 4, "test");
        for i in 0..6 {
            queue.push(i);
        }
        assert_eq!(queue.dropped(), 2, "two rows past the capacity of four");
        let running = tokio::spawn(writer.run());
        queue.flush().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![vec![0, 1, 2, 3]], "one batch");
        drop(queue);
        running.await.unwrap();
    }
}
