//! The services kept in memory beyond `max_watches`, in the order they are due to be
//! re-read. One task works through the queue for all of them (`Syncer::poll_services`):
//! a task per polled service cost about 1.5 KB each, more than the service's own data.

use std::collections::VecDeque;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A first-in, first-out queue of re-reads. Every entry waits the same interval, so the
/// queue stays ordered by due time without sorting.
pub struct PollQueue<T> {
    interval: Duration,
    queue: Mutex<VecDeque<(Instant, Weak<T>)>>,
    added: Notify,
}

impl<T> PollQueue<T> {
    pub fn new(interval: Duration) -> Self {
        PollQueue {
            interval,
            queue: Mutex::new(VecDeque::new()),
            added: Notify::new(),
        }
    }

    /// Queues `item` for a re-read one interval from now. Holds it weakly: an item dropped
    /// meanwhile (its service evicted) is skipped.
    pub fn push(&self, item: Weak<T>) {
        let due = Instant::now() + self.interval;
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push_back((due, item));
        if queue.len() == 1 {
            self.added.notify_one();
        }
    }

    /// Waits for the next item that is due and still alive, and takes it off the queue.
    pub async fn next_due(&self) -> std::sync::Arc<T> {
        loop {
            let next_due = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    match queue.front() {
                        None => break None,
                        Some((due, _)) if *due > Instant::now() => break Some(*due),
                        Some(_) => {
                            if let Some(item) = queue.pop_front().and_then(|(_, w)| w.upgrade()) {
                                return item;
                            }
                        }
                    }
                }
            };
            match next_due {
                // An item pushed meanwhile is due after this one: sleeping until then is right.
                Some(due) => tokio::time::sleep_until(due).await,
                None => self.added.notified().await,
            }
        }
    }

    /// Items queued, alive or not.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn items_come_out_in_order_one_interval_after_their_push_and_dropped_ones_never() {
        let queue = PollQueue::new(Duration::from_secs(30));
        let (a, b, c) = (Arc::new("a"), Arc::new("b"), Arc::new("c"));
        let start = Instant::now();
        queue.push(Arc::downgrade(&a));
        tokio::time::advance(Duration::from_secs(10)).await;
        queue.push(Arc::downgrade(&b));
        queue.push(Arc::downgrade(&c));
        drop(b);
        assert_eq!(*queue.next_due().await, "a");
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(*queue.next_due().await, "c", "b was dropped");
        assert_eq!(start.elapsed(), Duration::from_secs(40));
        assert_eq!(queue.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_queue_waits_for_a_push() {
        let queue = Arc::new(PollQueue::new(Duration::from_secs(1)));
        let item = Arc::new(7);
        let waiter = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { *queue.next_due().await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        queue.push(Arc::downgrade(&item));
        assert_eq!(waiter.await.unwrap(), 7);
    }
}
