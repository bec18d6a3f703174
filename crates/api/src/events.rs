//! The event trail (`GET /v1/events`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The filters of `GET /v1/events`; every one given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this job's events: its id, or a unique prefix of it (as set ids are given). A
    /// prefix that matches no job is a 404, one that matches several a 400 naming them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// coordinator, store, engine, replication, provider or requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The reference system's event number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// At or after this time (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// At most this many (the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer of `GET /v1/events`, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
    /// The DAG members whose events are missing from a job's trail gathered across the DAG
    /// (`job` given to a DAG member), each as `node: why`; a trail without them may lack
    /// steps, and the reader must know which node's. Empty outside a DAG.
    #[serde(default)]
    pub unreachable: Vec<String>,
}

impl EventList {
    /// One time-ordered trail from the trails of several nodes (each oldest first), with the
    /// filters of `q` other than `job` applied to the whole, as a single node applies them
    /// to its own: `limit` keeps the newest of the merged trail, not of each node's.
    ///
    /// Events of the same millisecond are ordered by node, and keep their node's order
    /// (each node's log is ordered by its own clock; nothing finer orders two nodes).
    pub fn merge(trails: Vec<Vec<Event>>, q: &EventQuery) -> Vec<Event> {
        let mut all: Vec<Event> = trails
            .into_iter()
            .flatten()
            .filter(|e| q.source.as_ref().is_none_or(|s| e.source.eq_ignore_ascii_case(s)))
            .filter(|e| q.id.is_none_or(|id| e.id == id))
            .filter(|e| q.since_ms.is_none_or(|t| e.time_ms >= t))
            .collect();
        // Stable: equal keys keep the order they had within their node's trail.
        all.sort_by(|a, b| (a.time_ms, &a.node).cmp(&(b.time_ms, &b.node)));
        if let Some(n) = q.limit {
            all.drain(..all.len().saturating_sub(n));
        }
        all
    }
}

/// One logged event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The node that emitted it.
    pub node: String,
    pub source: String,
    pub id: u32,
    /// info, warning or error.
    pub level: String,
    pub job: Option<Uuid>,
    pub message: String,
    /// Structured fields (the message template's and any extra ones).
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(time_ms: u64, node: &str, source: &str, id: u32) -> Event {
        Event {
            time_ms,
            node: node.into(),
            source: source.into(),
            id,
            level: "info".into(),
            job: None,
            message: format!("{node} {id}"),
            fields: serde_json::Map::new(),
        }
    }

    fn keys(v: &[Event]) -> Vec<(u64, &str, u32)> {
        v.iter().map(|e| (e.time_ms, e.node.as_str(), e.id)).collect()
    }

    #[test]
    fn merge_orders_by_time_then_node_and_keeps_each_nodes_order() {
        let a =
            vec![ev(10, "a", "store", 910), ev(30, "a", "engine", 210), ev(30, "a", "store", 913)];
        let b = vec![
            ev(5, "b", "replication", 2021),
            ev(30, "b", "replication", 960),
            ev(40, "b", "replication", 2033),
        ];
        // The passive's trail given first: the order of the trails does not matter.
        let merged = EventList::merge(vec![b, a], &EventQuery::default());
        assert_eq!(
            keys(&merged),
            [
                (5, "b", 2021),
                (10, "a", 910),
                (30, "a", 210),
                (30, "a", 913),
                (30, "b", 960),
                (40, "b", 2033)
            ]
        );
    }

    #[test]
    fn merge_applies_the_filters_to_the_whole_trail() {
        let a =
            vec![ev(10, "a", "store", 910), ev(30, "a", "engine", 210), ev(50, "a", "store", 913)];
        let b = vec![ev(20, "b", "replication", 2021), ev(40, "b", "replication", 960)];
        let q = |f: fn(&mut EventQuery)| {
            let mut q = EventQuery::default();
            f(&mut q);
            q
        };
        let newest = EventList::merge(vec![a.clone(), b.clone()], &q(|q| q.limit = Some(2)));
        assert_eq!(keys(&newest), [(40, "b", 960), (50, "a", 913)]);
        let store =
            EventList::merge(vec![a.clone(), b.clone()], &q(|q| q.source = Some("Store".into())));
        assert_eq!(keys(&store), [(10, "a", 910), (50, "a", 913)]);
        let since = EventList::merge(vec![a.clone(), b.clone()], &q(|q| q.since_ms = Some(30)));
        assert_eq!(keys(&since), [(30, "a", 210), (40, "b", 960), (50, "a", 913)]);
        let one = EventList::merge(vec![a, b], &q(|q| q.id = Some(2021)));
        assert_eq!(keys(&one), [(20, "b", 2021)]);
    }
}
