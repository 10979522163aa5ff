//! Server-Sent Events framing: a stream of documented events (from the operations layer) as
//! a `text/event-stream` whose every `data:` line is one JSON `StreamEvent`, with a keep-alive
//! comment every 15 s. Dropping the response drops the stream (see the operation for what
//! that means: a run is killed, a follower only unsubscribes).

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cerver_control::EventStream;
use cerver_types::StreamEvent;
use futures::StreamExt;

fn frame(ev: &StreamEvent) -> Result<Event, Infallible> {
    Ok(Event::default().data(serde_json::to_string(ev).expect("events serialize")))
}

/// The SSE response carrying `events`.
pub fn response(events: EventStream) -> Response {
    Sse::new(events.map(|ev| frame(&ev)))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
