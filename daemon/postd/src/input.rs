//! What the event loop's channel carries, from the threads that feed it.

use super::pickup::WatchEvent;
use super::workers::Completion;

pub enum Input {
    /// An event of the watch of this generation.
    Watch(u64, WatchEvent),
    Signal(i32),
    Done(Box<Completion>),
}
