//! A bounded pool of blocking worker threads for inference, off the proxy's async threads.
//! A full queue refuses the job at once (the caller answers 503) instead of growing. Each
//! worker keeps the models' run states it has used ([`RunStates`]) and lends them to its jobs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tokio::sync::oneshot;

use super::model::RunStates;

type Job = Box<dyn FnOnce(&mut RunStates) + Send + 'static>;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the inference queue is full")]
    Full,
    #[error("the inference pool has stopped")]
    Stopped,
}

/// Fixed worker threads fed from one bounded queue.
pub struct InferencePool {
    sender: SyncSender<Job>,
}

impl InferencePool {
    /// Starts `threads` workers sharing a queue of `queue_depth` waiting jobs.
    pub fn new(threads: usize, queue_depth: usize) -> std::io::Result<InferencePool> {
        let (sender, receiver) = sync_channel::<Job>(queue_depth);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            thread::Builder::new()
                .name(format!("modelgate-infer-{i}"))
                .spawn(move || worker(&receiver))?;
        }
        Ok(InferencePool { sender })
    }

    /// Runs `work` on a worker and awaits its result; refuses at once when the queue is full.
    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut RunStates) -> T + Send + 'static,
    {
        self.submit(work)?.await.map_err(|_| PoolError::Stopped)
    }

    /// Queues `work` without waiting; the receiver yields its result.
    pub fn submit<T, F>(&self, work: F) -> Result<oneshot::Receiver<T>, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut RunStates) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |states| {
            // The requester may have gone (client disconnect): nothing to do then.
            let _ = tx.send(work(states));
        });
        self.sender.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Full,
            TrySendError::Disconnected(_) => PoolError::Stopped,
        })?;
        Ok(rx)
    }
}

/// How long the worker at the queue waits for a job before it lets the queue go and drops
/// the run states of models that went, so a replaced model's weights do not outlive it on
/// an idle worker (the other workers wait their turn at the queue).
const IDLE_SWEEP: Duration = Duration::from_secs(10);

fn worker(receiver: &Mutex<Receiver<Job>>) {
    // Dropped when the loop ends, while the thread (and tract's thread-locals) still live.
    let mut states = RunStates::default();
    loop {
        let job = match receiver.lock() {
            Ok(guard) => guard.recv_timeout(IDLE_SWEEP),
            Err(_) => return,
        };
        let job = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                states.drop_gone();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // A job that panics (a bug in a model's kernels, say) fails its own request — its
        // result sender goes, so the requester gets an error at once — and must not take
        // the worker with it: with the last worker gone, every later inference fails.
        if catch_unwind(AssertUnwindSafe(|| job(&mut states))).is_err() {
            log::error!("an inference job panicked; its request failed, the worker goes on");
            // A state left mid-run is not reused.
            states = RunStates::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[tokio::test]
    async fn runs_jobs_and_returns_results() {
        let pool = InferencePool::new(2, 4).unwrap();
        assert_eq!(pool.run(|_| 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_worker_goes_on() {
        let pool = InferencePool::new(1, 4).unwrap();
        let panicked = pool.submit(|_| -> u32 { panic!("a kernel bug") }).unwrap();
        let next = pool.submit(|_| 7).unwrap();
        let wait = std::time::Duration::from_secs(10);
        assert!(tokio::time::timeout(wait, panicked).await.unwrap().is_err());
        assert_eq!(tokio::time::timeout(wait, next).await.unwrap(), Ok(7));
        assert_eq!(pool.run(|_| 8).await, Ok(8));
    }

    #[tokio::test]
    async fn full_queue_is_refused_not_grown() {
        let pool = InferencePool::new(1, 1).unwrap();
        let (release, wait) = channel::<()>();
        let (started_tx, started) = channel::<()>();
        // Occupy the only worker until released, then fill the one queue slot.
        let busy = pool
            .submit(move |_| {
                started_tx.send(()).unwrap();
                wait.recv().unwrap();
            })
            .unwrap();
        started.recv().unwrap();
        let queued = pool.submit(|_| 1).unwrap();
        assert_eq!(pool.submit(|_| 2).err(), Some(PoolError::Full));
        release.send(()).unwrap();
        busy.await.unwrap();
        assert_eq!(queued.await.unwrap(), 1);
    }
}
