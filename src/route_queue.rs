//! A route's `max_in_flight`: at most so many of its requests upstream at once. The rest wait in
//! arrival order (tokio's semaphore hands a freed place to the longest waiter, and a newcomer
//! never takes a place while anyone waits), at most `queue` of them and each for at most
//! `queue_timeout`; beyond either, 503 `route_busy`. The place is held until the answer's body
//! has ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteBusy {
    /// `queue` requests were already waiting.
    QueueFull,
    /// No place came free within `queue_timeout`.
    TimedOut(Duration),
}

/// The places of one route and the requests waiting for one.
#[derive(Debug)]
pub struct RouteQueue {
    places: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_in_flight: usize,
    queue: usize,
    timeout: Duration,
}

/// Counts a request as waiting while it lives: in the queue's bound and in the
/// `route_queue` gauge, also when the client leaves while it waits.
struct Waiting<'a> {
    queue: &'a RouteQueue,
    gauge: Gauge,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.queue.waiting.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

impl RouteQueue {
    /// `max_in_flight` places, at most `queue` requests waiting for one, each for at most
    /// `timeout` (a route's `max_in_flight`, `queue` and `queue_timeout`).
    pub fn new(max_in_flight: usize, queue: usize, timeout: Duration) -> Self {
        RouteQueue {
            places: Arc::new(Semaphore::new(max_in_flight)),
            waiting: AtomicUsize::new(0),
            max_in_flight,
            queue,
            timeout,
        }
    }

    /// A place upstream at once, if one is free and nobody waits for one.
    pub fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        self.places.clone().try_acquire_owned().ok()
    }

    /// A place upstream: at once if one is free, else [`Self::wait`] (boxed: only a request
    /// that has to wait carries the wait's state).
    pub async fn place(
        &self,
        gauge: impl FnOnce() -> Gauge,
    ) -> Result<OwnedSemaphorePermit, RouteBusy> {
        match self.try_enter() {
            Some(place) => Ok(place),
            None => Box::pin(self.wait(gauge)).await,
        }
    }

    /// A place upstream after the requests that came first, if the queue has room and one
    /// comes free in time. `gauge` gives the route's `route_queue` gauge.
    pub async fn wait(
        &self,
        gauge: impl FnOnce() -> Gauge,
    ) -> Result<OwnedSemaphorePermit, RouteBusy> {
        if let Some(place) = self.try_enter() {
            return Ok(place);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(RouteBusy::QueueFull);
        }
        let waiting = Waiting {
            queue: self,
            gauge: gauge(),
        };
        waiting.gauge.inc();
        let timeout = self.timeout;
        let place = tokio::time::timeout(timeout, self.places.clone().acquire_owned()).await;
        drop(waiting);
        match place {
            Ok(Ok(place)) => Ok(place),
            // The semaphore is never closed; were it, no place would ever come.
            Ok(Err(_)) | Err(_) => Err(RouteBusy::TimedOut(timeout)),
        }
    }

    /// `max_in_flight`, `queue` and the timeout it was made with.
    pub fn limits(&self) -> (usize, usize, Duration) {
        (self.max_in_flight, self.queue, self.timeout)
    }

    /// Requests waiting for a place now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Requests upstream now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.places.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(max_in_flight: usize, queue: usize, timeout_ms: u64) -> Arc<RouteQueue> {
        Arc::new(RouteQueue::new(
            max_in_flight,
            queue,
            Duration::from_millis(timeout_ms),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_get_places_in_arrival_order_within_the_bound() {
        let q = queue(1, 2, 60_000);
        let gauge = Gauge::default();
        let first = q.wait(|| gauge.clone()).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for n in 0..2 {
            let (q2, tx, g) = (q.clone(), tx.clone(), gauge.clone());
            tasks.push(tokio::spawn(async move {
                let place = q2.wait(|| g).await.unwrap();
                tx.send(n).unwrap();
                drop(place);
            }));
            // Each waits before the next arrives.
            while q.waiting() <= n {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(gauge.get(), 2);
        assert_eq!(q.in_flight(), 1);
        // A third waiter is one too many.
        assert_eq!(
            q.wait(|| gauge.clone()).await.unwrap_err(),
            RouteBusy::QueueFull
        );
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!((rx.recv().await, rx.recv().await), (Some(0), Some(1)));
        assert_eq!((q.waiting(), gauge.get(), q.in_flight()), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_timeout_gives_up_and_leaves_the_queue() {
        let q = queue(1, 4, 500);
        let gauge = Gauge::default();
        let _held = q.wait(|| gauge.clone()).await.unwrap();
        let started = tokio::time::Instant::now();
        let busy = q.wait(|| gauge.clone()).await.unwrap_err();
        assert_eq!(busy, RouteBusy::TimedOut(Duration::from_millis(500)));
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert_eq!((q.waiting(), gauge.get()), (0, 0));
    }
}
