//! Which windows a reading belongs to.

use crate::query::WindowSpec;

/// Assigns event times to windows `[start, end)`.
#[derive(Clone, Copy, Debug)]
pub struct WindowAssigner {
    size: i64,
    slide: i64,
}

impl WindowAssigner {
    /// An assigner for a window spec.
    pub fn new(spec: WindowSpec) -> Self {
        match spec {
            WindowSpec::Tumble { size } => WindowAssigner { size, slide: size },
            WindowSpec::Hop { slide, size } => WindowAssigner { size, slide },
            // Sessions are stitched from panes of one gap (`window::session`).
            WindowSpec::Session { gap } => WindowAssigner {
                size: gap,
                slide: gap,
            },
        }
    }

    /// Window length.
    pub fn size(&self) -> i64 {
        self.size
    }

    /// Distance between window starts (the size for tumbling windows).
    pub fn slide(&self) -> i64 {
        self.slide
    }

    /// Calls `f(start, end)` for every window that holds `ts`, earliest first.
    #[inline]
    pub fn for_each(&self, ts: i64, mut f: impl FnMut(i64, i64)) {
        let last = ts.div_euclid(self.slide) * self.slide;
        if self.slide == self.size {
            f(last, last + self.size);
            return;
        }
        let mut start = last - self.size + self.slide;
        while start <= last {
            f(start, start + self.size);
            start += self.slide;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(spec: WindowSpec, ts: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        WindowAssigner::new(spec).for_each(ts, |s, e| out.push((s, e)));
        out
    }

    #[test]
    fn tumbling_and_hopping() {
        assert_eq!(windows(WindowSpec::Tumble { size: 10 }, 25), vec![(20, 30)]);
        assert_eq!(windows(WindowSpec::Tumble { size: 10 }, -1), vec![(-10, 0)]);
        assert_eq!(
            windows(WindowSpec::Hop { slide: 5, size: 15 }, 25),
            vec![(15, 30), (20, 35), (25, 40)]
        );
        assert_eq!(
            windows(WindowSpec::Hop { slide: 5, size: 15 }, 24),
            vec![(10, 25), (15, 30), (20, 35)]
        );
    }
}
