//! Consul's response bodies, read within bounds: a limit per endpoint (sized from realistic
//! catalogs), a budget for all bodies being read at once, and large bodies parsed as they
//! stream in rather than buffered whole. A hostile or broken agent answering with a huge
//! body costs at most its endpoint's limit, and all bodies together at most the budget.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::ConsulError;

/// Bodies up to this size are buffered and parsed in place (the fastest parse); past it,
/// the rest is parsed on a blocking thread as it arrives, a few chunks at a time.
const IN_PLACE: usize = 1024 * 1024;
/// Chunks in flight between the connection and the parser.
const CHUNKS_IN_FLIGHT: usize = 8;
/// The limit of a body from the endpoint at `segments`: `max` for the lists that grow with
/// instances and nodes (health, nodes, prepared query results); half of it for the service
/// list (names and tags only: at the default 64 MiB, 100,000 services with ten tags each
/// fit); an eighth for the small endpoints (agent self, datacenters, the query list).
pub fn endpoint_limit(segments: &[&str], max: usize) -> usize {
    match segments {
        ["v1", "catalog", "nodes"] | ["v1", "health", ..] => max,
        ["v1", "query", _, "execute"] => max,
        ["v1", "catalog", "services"] => max / 2,
        _ => max / 8,
    }
}

/// Bytes of bodies being read at once, across every request.
#[derive(Debug)]
pub struct BodyBudget {
    total: usize,
    used: AtomicUsize,
}

impl BodyBudget {
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
            total,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes held by bodies being read now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What one body holds of the budget, given back when dropped (once the body is parsed).
struct Held {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Held {
    fn take(&mut self, n: usize, path: &str) -> Result<(), ConsulError> {
        let before = self.budget.used.fetch_add(n, Ordering::Relaxed);
        if before + n > self.budget.total {
            self.budget.used.fetch_sub(n, Ordering::Relaxed);
            return Err(ConsulError::OverBodyBudget {
                path: path.to_owned(),
                budget: self.budget.total,
            });
        }
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The body of `response` as JSON, refused as soon as it would exceed `limit` bytes
/// (declared or received) or the budget.
pub async fn read_json<T>(
    mut response: reqwest::Response,
    path: &str,
    limit: usize,
    budget: &Arc<BodyBudget>,
) -> Result<T, ConsulError>
where
    T: DeserializeOwned + Send + 'static,
{
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ConsulError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    let mut intake = Intake {
        path,
        limit,
        received: 0,
        held: Held {
            budget: Arc::clone(budget),
            bytes: 0,
        },
    };
    let mut head = Vec::new();
    while head.len() <= IN_PLACE {
        match intake.next(&mut response).await? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => return serde_json::from_slice(&head).map_err(|e| decode(path, &e)),
        }
    }
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let reader = std::io::BufReader::with_capacity(
        64 * 1024,
        Chunks {
            current: Bytes::from(head),
            rx,
        },
    );
    let parser = tokio::task::spawn_blocking(move || serde_json::from_reader::<_, T>(reader));
    let pumped = loop {
        match intake.next(&mut response).await {
            Ok(Some(chunk)) => {
                if tx.send(chunk).await.is_err() {
                    // The parser stopped: the body is not valid JSON, it says why.
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    drop(tx);
    let parsed = parser.await.map_err(|e| ConsulError::Decode {
        path: path.to_owned(),
        reason: format!("parser stopped: {e}"),
    })?;
    pumped?;
    parsed.map_err(|e| decode(path, &e))
}

/// Counts a body's chunks against its limit and the budget.
struct Intake<'a> {
    path: &'a str,
    limit: usize,
    received: usize,
    held: Held,
}

impl Intake<'_> {
    async fn next(
        &mut self,
        response: &mut reqwest::Response,
    ) -> Result<Option<Bytes>, ConsulError> {
        let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ConsulError::from_transport(self.path, e))?
        else {
            return Ok(None);
        };
        self.received += chunk.len();
        if self.received > self.limit {
            return Err(ConsulError::TooLarge {
                path: self.path.to_owned(),
                limit: self.limit,
            });
        }
        self.held.take(chunk.len(), self.path)?;
        Ok(Some(chunk))
    }
}

fn decode(path: &str, e: &serde_json::Error) -> ConsulError {
    ConsulError::Decode {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The chunks of a body as they arrive, for a parser on a blocking thread.
struct Chunks {
    current: Bytes,
    rx: mpsc::Receiver<Bytes>,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_by_endpoint() {
        let max = 64 << 20;
        assert_eq!(
            endpoint_limit(&["v1", "catalog", "services"], max),
            32 << 20
        );
        assert_eq!(
            endpoint_limit(&["v1", "health", "service", "web"], max),
            max
        );
        assert_eq!(endpoint_limit(&["v1", "catalog", "nodes"], max), max);
        assert_eq!(endpoint_limit(&["v1", "query", "q", "execute"], max), max);
        assert_eq!(endpoint_limit(&["v1", "query"], max), 8 << 20);
        assert_eq!(endpoint_limit(&["v1", "agent", "self"], max), 8 << 20);
    }
}
