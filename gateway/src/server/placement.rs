//! Which runtime thread serves a new client connection.
//!
//! pingora runs a listener on single-threaded runtimes, one per thread (`work_stealing =
//! false`), and puts each accepted connection on a random one of them. A connection then stays
//! on that thread for its whole life, keep-alive requests included, which is what keeps its
//! upstream pool and caches thread-local. But chance does not spread a few long-lived
//! connections evenly: a load balancer's four keep-alive connections to a freshly started
//! two-thread gateway put 94% or more of the work on one thread in two of eight starts
//! (BENCHMARKS.md), leaving the other idle. So each new connection goes to the thread serving
//! the fewest connections now, moved there before its TLS handshake.
//!
//! pingora does not tell which threads a listener runs on, so they are learnt: a thread that
//! receives a connection registers itself (its runtime handle), and until all are known each
//! placement sends a few empty tasks to random threads of the runtime (pingora's own
//! `current_handle()`), which register theirs. Without that, four connections that all
//! arrived on one thread would stay there, the one case placement is for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use tokio::runtime::Handle;

/// Empty tasks sent to random threads, per thread of the runtime, at the first placement:
/// the chance that one of `n` threads gets none is n·(1 − 1/n)^(16n) < n·e^−16.
const PROBES_PER_THREAD: usize = 16;

/// The threads of one listener's runtime, with the connections each serves now.
#[derive(Debug)]
pub struct Placement {
    /// How many threads the runtime has (`[server] threads`).
    expected: usize,
    threads: Mutex<Vec<Thread>>,
}

#[derive(Debug)]
struct Thread {
    id: ThreadId,
    handle: Handle,
    open: Arc<AtomicUsize>,
}

/// Where a new connection runs.
#[derive(Debug)]
pub enum Place {
    /// On the thread it arrived on.
    Here(Serving),
    /// Spawned onto another thread, which serves fewer connections.
    There(Handle, Serving),
}

/// A connection counted against its thread; dropping it (the connection closed) uncounts it.
#[derive(Debug)]
pub struct Serving {
    open: Arc<AtomicUsize>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Placement {
    /// For a listener whose runtime has `threads` threads.
    pub fn new(threads: usize) -> Placement {
        Placement {
            expected: threads.max(1),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Place a connection that pingora handed to the current thread (a runtime thread of the
    /// listener; outside a runtime it stays here). `random_thread` gives the handle of a
    /// random thread of the listener's runtime, for learning the threads not yet known.
    pub fn place(self: &Arc<Self>, random_thread: impl Fn() -> Handle) -> Place {
        let here = std::thread::current().id();
        let Ok(handle) = Handle::try_current() else {
            return Place::Here(Serving {
                open: Arc::new(AtomicUsize::new(1)),
            });
        };
        let (place, probes) = {
            let mut threads = self.lock();
            let known = threads.len();
            let index = register(&mut threads, here, handle);
            let probes = if threads.len() >= self.expected {
                0
            } else if known == 0 {
                PROBES_PER_THREAD * self.expected
            } else {
                2
            };
            let load = |t: &Thread| t.open.load(Ordering::Relaxed);
            // The least loaded thread; this one on a tie, so nothing moves without a reason.
            let mut chosen = index;
            for (i, thread) in threads.iter().enumerate() {
                if load(thread) < load(&threads[chosen]) {
                    chosen = i;
                }
            }
            let thread = &threads[chosen];
            thread.open.fetch_add(1, Ordering::Relaxed);
            let serving = Serving {
                open: thread.open.clone(),
            };
            let place = if chosen == index {
                Place::Here(serving)
            } else {
                Place::There(thread.handle.clone(), serving)
            };
            (place, probes)
        };
        // Sent with the list unlocked: a probe that runs at once on another thread takes it.
        for _ in 0..probes {
            let this = self.clone();
            random_thread().spawn(async move {
                if let Ok(handle) = Handle::try_current() {
                    register(&mut this.lock(), std::thread::current().id(), handle);
                }
            });
        }
        place
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Thread>> {
        // A poisoned lock still holds a valid list: every update is one push.
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections served now, per known thread, in the order the threads became known.
    #[cfg(test)]
    fn loads(&self) -> Vec<usize> {
        self.lock()
            .iter()
            .map(|t| t.open.load(Ordering::Relaxed))
            .collect()
    }
}

/// The index of thread `id` in `threads`, added with no connections if it is new.
fn register(threads: &mut Vec<Thread>, id: ThreadId, handle: Handle) -> usize {
    match threads.iter().position(|t| t.id == id) {
        Some(i) => i,
        None => {
            threads.push(Thread {
                id,
                handle,
                open: Arc::new(AtomicUsize::new(0)),
            });
            threads.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    type Job = Box<dyn FnOnce() + Send>;

    /// A runtime thread as pingora runs one: a current-thread runtime driven by a thread of its
    /// own, so tasks spawned onto its handle run there.
    struct Worker {
        jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Worker {
        fn start() -> Worker {
            let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    while let Some(job) = queue.recv().await {
                        job();
                    }
                });
            });
            Worker {
                jobs: Some(jobs),
                thread: Some(thread),
            }
        }

        /// Run `f` on this worker's thread, inside its runtime.
        fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
            let (tx, rx) = std::sync::mpsc::channel();
            let job: Job = Box::new(move || tx.send(f()).unwrap());
            self.jobs.as_ref().unwrap().send(job).ok().unwrap();
            rx.recv().unwrap()
        }

        /// pingora hands this thread a new connection.
        fn receive(&self, placement: &Arc<Placement>) -> Place {
            let placement = placement.clone();
            // Probes go to this thread itself: the tests below say which threads are known.
            self.run(move || placement.place(Handle::current))
        }

        fn thread_id(&self) -> ThreadId {
            self.run(|| std::thread::current().id())
        }
    }

    impl Drop for Worker {
        fn drop(&mut self) {
            self.jobs.take();
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    #[test]
    fn connections_go_to_the_least_loaded_thread_whatever_thread_receives_them() {
        let placement = Arc::new(Placement::new(2));
        let (a, b) = (Worker::start(), Worker::start());
        // Both threads known, one connection each.
        let first = b.receive(&placement);
        let second = a.receive(&placement);
        assert!(matches!(first, Place::Here(_)) && matches!(second, Place::Here(_)));
        // pingora hands the next four all to `a`: every other one moves to `b`.
        let mut kept = vec![first, second];
        let mut moved = 0;
        for _ in 0..4 {
            let place = a.receive(&placement);
            if matches!(place, Place::There(..)) {
                moved += 1;
            }
            kept.push(place);
        }
        assert_eq!(moved, 2);
        assert_eq!(placement.loads(), vec![3, 3]);
        // Closing connections gives their places back.
        kept.truncate(2);
        assert_eq!(placement.loads().iter().sum::<usize>(), 2);
        drop(kept);
        assert_eq!(placement.loads(), vec![0, 0]);
    }

    #[test]
    fn a_thread_pingora_has_handed_nothing_yet_is_learnt_and_served_next() {
        let placement = Arc::new(Placement::new(2));
        let (a, b) = (Worker::start(), Worker::start());
        let b_handle = b.run(Handle::current);
        // pingora hands the first connection to `a`; the probes it sends land on `b`.
        let first = {
            let placement = placement.clone();
            a.run(move || placement.place(move || b_handle.clone()))
        };
        assert!(matches!(first, Place::Here(_)));
        for _ in 0..1000 {
            if placement.loads().len() == 2 {
                break;
            }
            b.run(|| ()); // let b's runtime run the probes
        }
        assert_eq!(
            placement.loads(),
            vec![1, 0],
            "a with one connection, b learnt"
        );
        // The second connection also arrives on `a`, and goes to `b`.
        let second = a.receive(&placement);
        assert!(matches!(second, Place::There(..)));
        assert_eq!(placement.loads(), vec![1, 1]);
    }

    #[test]
    fn a_moved_connection_runs_on_the_thread_it_was_placed_on() {
        let placement = Arc::new(Placement::new(2));
        let (a, b) = (Worker::start(), Worker::start());
        let _on_b = b.receive(&placement);
        let on_a = a.receive(&placement);
        assert!(
            matches!(on_a, Place::Here(_)),
            "the idle thread keeps its connection"
        );
        let tie = a.receive(&placement);
        assert!(
            matches!(tie, Place::Here(_)),
            "a tie stays where it arrived"
        );
        let Place::There(handle, serving) = a.receive(&placement) else {
            panic!("the busier thread passes the connection on");
        };
        let ran_on = a.run(move || {
            let (tx, rx) = std::sync::mpsc::channel();
            handle.spawn(async move {
                // The connection served and closed.
                drop(serving);
                tx.send(std::thread::current().id()).unwrap();
            });
            rx
        });
        let ran_on = ran_on.recv().unwrap();
        assert_eq!(ran_on, b.thread_id());
        assert_ne!(ran_on, a.thread_id());
        drop(tie);
        assert_eq!(placement.loads(), vec![1, 1], "b: _on_b; a: on_a");
    }
}
