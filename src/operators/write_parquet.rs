//! Commits each closed window's rows as one Parquet file.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::{ClosedWindow, Time};
use crate::engine::control::{Control, Metrics};
use crate::sink::{CommittedFile, Layout, Superseded, write_parquet};

/// Called with every committed file (the sync journal listens here).
pub type OnCommit = Arc<dyn Fn(&CommittedFile) + Send + Sync>;

/// Called after a result file was moved aside because a newer revision replaces it (the
/// sync journal listens here, so the target follows the move).
pub type OnSupersede = Arc<dyn Fn(&Superseded) + Send + Sync>;

/// Writes closed windows.
pub trait WriteParquet {
    /// Writes each window as `<query>/date=../hour=../window-<start>-w<i>of<n>.parquet`.
    fn write_parquet(
        self,
        layout: Layout,
        unique: Option<String>,
        on_commit: OnCommit,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    );
}

impl WriteParquet for StreamVec<'_, Time, ClosedWindow> {
    fn write_parquet(
        self,
        layout: Layout,
        unique: Option<String>,
        on_commit: OnCommit,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) {
        let worker = self.scope().index();
        self.sink(Pipeline, "WriteParquet", move |(input, _frontier)| {
            input.for_each_stamp(|_cap, data| {
                for windows in data {
                    for window in windows.drain(..) {
                        if window.batch.num_rows() == 0 {
                            continue;
                        }
                        let relative = layout.window_file(window.start, worker);
                        match write_parquet(
                            &layout,
                            relative,
                            &window.batch,
                            unique.as_deref().as_slice(),
                            || metrics.window_durable(window.start),
                        ) {
                            Ok(file) => {
                                Metrics::add(&metrics.rows, file.rows);
                                Metrics::add(&metrics.files, 1);
                                Metrics::add(&metrics.bytes_written, file.bytes);
                                on_commit(&file);
                            }
                            Err(e) => control.fail(e.into()),
                        }
                    }
                }
            });
        });
    }
}
