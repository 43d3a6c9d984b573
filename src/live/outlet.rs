//! Where a call's events go once its owner has numbered them: the live hub (this
//! node's `/live` clients), Redis (other nodes), and the in-process bus. Nothing here
//! waits: the hub `try_send`s into bounded client queues, Redis gets a bounded queue
//! of its own, and the bus is a bounded broadcast ring whose laggards are told so.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::cluster::node::Cluster;
use crate::events::Event;
use crate::live::hub::LiveHub;
use crate::metrics::Metrics;

pub struct EventOutlet {
    metrics: Metrics,
    live: Arc<LiveHub>,
    cluster: Option<Arc<Cluster>>,
    bus: broadcast::Sender<Arc<Event>>,
}

impl EventOutlet {
    pub fn new(metrics: Metrics, live: Arc<LiveHub>, cluster: Option<Arc<Cluster>>, bus_capacity: usize) -> Self {
        let (bus, _) = broadcast::channel(bus_capacity);
        Self { metrics, live, cluster, bus }
    }

    /// Hands one numbered event to every outlet and returns it shared.
    pub fn publish(&self, event: Event) -> Arc<Event> {
        self.metrics.events_published.with_label_values(&[event.type_name()]).inc();
        let json = self.live.publish(&event);
        if let (Some(c), Some(json)) = (&self.cluster, json) {
            c.offer(&event, json);
        }
        let event = Arc::new(event);
        let _ = self.bus.send(event.clone());
        event
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.bus.subscribe()
    }
}
