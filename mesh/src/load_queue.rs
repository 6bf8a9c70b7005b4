//! A load queue with priorities: at most `limit` loads run at once; a load a request is waiting
//! on (higher priority) overtakes background loads queued before it.

use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Priority of a load: requests waiting beat background loads; within a class, older first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Proactive or management loads.
    Background,
    /// A request is waiting for this load.
    Urgent,
}

#[derive(Debug)]
struct Waiter {
    priority: Priority,
    seq: std::cmp::Reverse<u64>,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, o: &Self) -> bool {
        (self.priority, self.seq) == (o.priority, o.seq)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Waiter {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.priority, self.seq).cmp(&(o.priority, o.seq))
    }
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    seq: u64,
    queue: BinaryHeap<Waiter>,
}

/// The queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LoadQueue {
    limit: usize,
    state: Arc<Mutex<State>>,
}

/// Permission to run one load; releasing it lets the next queued load start.
#[derive(Debug)]
pub struct Permit {
    queue: LoadQueue,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.queue.release();
    }
}

impl LoadQueue {
    /// A queue running at most `limit` loads at once.
    pub fn new(limit: usize) -> Self {
        LoadQueue {
            limit: limit.max(1),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads running plus queued.
    pub fn in_progress(&self) -> usize {
        let s = self.lock();
        s.running + s.queue.len()
    }

    /// Loads waiting for a slot (not yet running).
    pub fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// Waits for a slot.
    pub async fn acquire(&self, priority: Priority) -> Permit {
        let rx = {
            let mut s = self.lock();
            if s.running < self.limit && s.queue.is_empty() {
                s.running += 1;
                return Permit {
                    queue: self.clone(),
                };
            }
            let (tx, rx) = oneshot::channel();
            s.seq += 1;
            let seq = std::cmp::Reverse(s.seq);
            s.queue.push(Waiter { priority, seq, tx });
            metrics::gauge!("modelmesh_loads_queued").set(s.queue.len() as f64);
            rx
        };
        // The slot is handed over by release(); a dropped sender cannot happen while the queue lives.
        let _ = rx.await;
        Permit {
            queue: self.clone(),
        }
    }

    fn release(&self) {
        let mut s = self.lock();
        while let Some(w) = s.queue.pop() {
            // Hand the slot to the next live waiter (skip cancelled ones).
            if w.tx.send(()).is_ok() {
                metrics::gauge!("modelmesh_loads_queued").set(s.queue.len() as f64);
                return;
            }
        }
        metrics::gauge!("modelmesh_loads_queued").set(0.0);
        s.running = s.running.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn urgent_loads_overtake_background_ones() {
        let q = LoadQueue::new(1);
        let first = q.acquire(Priority::Background).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, p) in [
            ("bg1", Priority::Background),
            ("bg2", Priority::Background),
            ("urgent", Priority::Urgent),
        ] {
            let (q, order) = (q.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = q.acquire(p).await;
                order.lock().unwrap().push(name);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(q.in_progress(), 4);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["urgent", "bg1", "bg2"]);
        assert_eq!(q.in_progress(), 0);
    }
}
