//! Shutdown as a type. Every tokio task the server starts goes through [`Tasks`], so
//! the drain can stop the background loops and wait for everything it started, instead
//! of leaving detached tasks running past the end of `Server::drain`. (Connection tasks
//! have their own tracker in `app::Lifecycle`, because the drain waits for them first, before
//! the calls' last words are transcribed.)

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the server's tasks are started; cheap to clone.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// A task that ends by itself (a call's owner, a job): tracked, never cancelled.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// A loop that runs until shutdown (a sweeper, a heartbeat, a queue worker): tracked,
    /// and dropped at its next `.await` once [`Tasks::shutdown`] is called.
    pub fn spawn_background<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Stops the background loops and waits, at most `limit`, for every task. False
    /// when some were still running at the limit (they are logged by the caller).
    pub async fn shutdown(&self, limit: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_background_loops_and_waits_for_jobs() {
        let tasks = Tasks::new();
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let t = ticks.clone();
        tasks.spawn_background(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let job = tasks.spawn(async move {
            let _ = rx.await;
            7
        });
        // Paused time: this sleep jumps the clock, firing the loop's timers on the way.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        // The loop ran (three ticks) and both are tracked.
        assert_eq!(ticks.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(tasks.running(), 2);
        // A job that has not finished holds the shutdown up to its limit...
        assert!(!tasks.shutdown(Duration::from_secs(2)).await);
        assert_eq!(tasks.running(), 1, "the loop was stopped, the job was not");
        // ...and is waited for once it ends.
        tx.send(()).unwrap();
        assert!(tasks.shutdown(Duration::from_secs(2)).await);
        assert_eq!(job.await.unwrap(), 7);
        assert_eq!(ticks.load(std::sync::atomic::Ordering::Relaxed), 3, "no tick after shutdown");
    }
}
