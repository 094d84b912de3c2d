//! Resumable Streamable HTTP streams (2025-11-25, `Last-Event-ID`): the
//! recent events of every stream, kept in memory and bounded, so that a
//! client that lost its connection gets what it missed when it reconnects
//! with the last id it saw. In memory: a resumed stream needs the replica
//! that served it (sticky sessions, like the sessions themselves).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use rmcp::transport::streamable_http_server::session::store::{
    EventId, EventStore, EventStoreError, EventStream,
};

/// Events kept, in all.
pub const MAX_EVENTS: usize = 10_000;
/// Bytes of messages kept, in all (a tool's answer may be large).
pub const MAX_BYTES: usize = 64 << 20;
/// How long an event may still be replayed.
pub const KEEP: Duration = Duration::from_secs(300);

struct Event {
    seq: u64,
    stream: String,
    message: ServerSseMessage,
    bytes: usize,
    at: Instant,
}

#[derive(Default)]
struct Recent {
    next: u64,
    bytes: usize,
    /// Every event, oldest first.
    events: VecDeque<Event>,
    /// Per stream, the sequence numbers of its events, oldest first.
    streams: HashMap<String, VecDeque<u64>>,
}

/// The event store: ids are `SEQ.STREAM`, unique while the process runs.
#[derive(Default)]
pub struct RecentEvents {
    recent: Mutex<Recent>,
}

impl Recent {
    fn evict(&mut self, now: Instant) {
        while let Some(oldest) = self.events.front() {
            let over = self.events.len() > MAX_EVENTS || self.bytes > MAX_BYTES;
            if !over && now.duration_since(oldest.at) < KEEP {
                break;
            }
            let gone = self.events.pop_front().expect("a front");
            self.bytes -= gone.bytes;
            if let Some(seqs) = self.streams.get_mut(&gone.stream) {
                seqs.pop_front();
                if seqs.is_empty() {
                    self.streams.remove(&gone.stream);
                }
            }
        }
    }

    fn after(&self, last_event_id: &str) -> Option<Vec<ServerSseMessage>> {
        let (seq, stream) = last_event_id.split_once('.')?;
        let seq: u64 = seq.parse().ok()?;
        let seqs = self.streams.get(stream)?;
        let first = self.events.front()?.seq;
        // Events after it were dropped already: the stream cannot be resumed whole.
        if first > seq + 1 {
            return None;
        }
        Some(
            seqs.iter()
                .filter(|s| **s > seq)
                .filter_map(|s| self.events.get(usize::try_from(s - first).ok()?))
                .map(|e| e.message.clone())
                .collect(),
        )
    }
}

#[async_trait::async_trait]
impl EventStore for RecentEvents {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, EventStoreError> {
        let bytes = event
            .message
            .as_ref()
            .map_or(0, |m| serde_json::to_vec(&**m).map_or(0, |v| v.len()));
        let now = Instant::now();
        let mut recent = self.recent.lock().expect("events lock");
        let seq = recent.next;
        recent.next += 1;
        let id = format!("{seq}.{stream_id}");
        let mut message = event.clone();
        message.event_id = Some(id.clone());
        recent.events.push_back(Event {
            seq,
            stream: stream_id.to_owned(),
            message,
            bytes,
            at: now,
        });
        recent.bytes += bytes;
        recent
            .streams
            .entry(stream_id.to_owned())
            .or_default()
            .push_back(seq);
        recent.evict(now);
        Ok(id)
    }

    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        let events = {
            let mut recent = self.recent.lock().expect("events lock");
            recent.evict(Instant::now());
            recent.after(last_event_id)
        };
        let events = events.ok_or_else(|| -> EventStoreError {
            format!(
                "no stream to resume from event `{}` (it is unknown, or older than {} s)",
                openfactory_core::rules::printable(last_event_id, 80),
                KEEP.as_secs()
            )
            .into()
        })?;
        Ok(Box::pin(futures::stream::iter(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn message(n: u64) -> ServerSseMessage {
        let mut m = ServerSseMessage::default();
        m.retry = Some(Duration::from_millis(n));
        m
    }

    async fn replayed(store: &RecentEvents, after: &str) -> Vec<u64> {
        store
            .replay_events_after(after)
            .await
            .unwrap()
            .map(|m| m.retry.unwrap().as_millis() as u64)
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_stream_resumes_after_the_last_event_seen_and_only_its_own() {
        let store = RecentEvents::default();
        let a0 = store.store_event("a", &message(0)).await.unwrap();
        let _b0 = store.store_event("b", &message(100)).await.unwrap();
        let a1 = store.store_event("a", &message(1)).await.unwrap();
        store.store_event("a", &message(2)).await.unwrap();
        assert_eq!(replayed(&store, &a0).await, vec![1, 2]);
        assert_eq!(replayed(&store, &a1).await, vec![2]);
        for bad in ["", "x", "99.a.b", "1.nowhere", "-1.a"] {
            assert!(store.replay_events_after(bad).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn it_keeps_at_most_max_events() {
        let store = RecentEvents::default();
        let first = store.store_event("s", &message(0)).await.unwrap();
        for n in 1..=(MAX_EVENTS as u64 + 10) {
            store.store_event("s", &message(n)).await.unwrap();
        }
        let recent = store.recent.lock().unwrap();
        assert_eq!(recent.events.len(), MAX_EVENTS);
        assert_eq!(recent.streams["s"].len(), MAX_EVENTS);
        drop(recent);
        // The first event is gone; a resume from it says so.
        assert!(store.replay_events_after(&first).await.is_err());
    }
}
