//! How windows travel between operators: in containers as large as the windows they
//! carry.
//!
//! Timely's default container builder (of an output session, and of an exchange)
//! makes every container room for 8 KiB of items. A window is a message of its own
//! (at its own time), so each took a container of 8 KiB however small it was, and a
//! chunk that closes thousands of sparse windows (a month of one device's one-minute
//! readings) queued all of them between two operators: a peak RSS of 315 MB over
//! that month, 162 MB now. Operators give a window as a container of one
//! (`give_container(&mut vec![window])`), and the exchange to a window's owner
//! rebuilds containers with [`Exact`].

use timely::container::{ContainerBuilder, LengthPreservingContainerBuilder, PushInto};
use timely::dataflow::channels::pact::ExchangeCore;

use crate::window::state::PartialWindow;

/// Builds each container from the items pushed since the last, sized to them.
pub struct Exact<T> {
    building: Vec<T>,
    built: Vec<T>,
}

impl<T> Default for Exact<T> {
    fn default() -> Self {
        Exact {
            building: Vec::new(),
            built: Vec::new(),
        }
    }
}

impl<T> PushInto<T> for Exact<T> {
    fn push_into(&mut self, item: T) {
        self.building.push(item);
    }
}

impl<T: Clone + 'static> ContainerBuilder for Exact<T> {
    type Container = Vec<T>;

    fn extract(&mut self) -> Option<&mut Vec<T>> {
        // Everything goes at `finish`: the exchange calls it at the end of each batch.
        None
    }

    fn finish(&mut self) -> Option<&mut Vec<T>> {
        if self.building.is_empty() {
            return None;
        }
        self.built = std::mem::take(&mut self.building);
        self.built.shrink_to_fit();
        Some(&mut self.built)
    }
}

impl<T: Clone + 'static> LengthPreservingContainerBuilder for Exact<T> {}

/// The exchange of partial windows to `target`.
pub fn to_target() -> ExchangeCore<Exact<PartialWindow>, impl FnMut(&PartialWindow) -> u64> {
    ExchangeCore::new_core(|p: &PartialWindow| p.target as u64)
}
