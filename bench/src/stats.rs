//! Medians with their range, over repeated runs.

use std::fmt;

/// Median, minimum and maximum of repeated measurements of one quantity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises `samples`; the median of an even count is the mean of the
    /// two middle values.
    ///
    /// # Panics
    ///
    /// Panics when `samples` is empty or contains a NaN, both bugs in the caller.
    pub fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "no samples to summarise");
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.partial_cmp(b).expect("samples are not NaN"));
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }

    /// Runs `measure` `runs` times and summarises the results.
    pub fn measure(
        runs: usize,
        mut measure: impl FnMut() -> anyhow::Result<f64>,
    ) -> anyhow::Result<Summary> {
        let samples = (0..runs)
            .map(|_| measure())
            .collect::<anyhow::Result<Vec<f64>>>()?;
        Ok(Summary::of(&samples))
    }
}

/// Formats as `median [min, max]` with the precision that the caller gives,
/// for example `{:.1}`.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let precision = f.precision().unwrap_or(1);
        write!(
            f,
            "{:.precision$} [{:.precision$}, {:.precision$}]",
            self.median, self.min, self.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Summary;

    #[test]
    fn median_of_odd_count() {
        let summary = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!(summary.median, 2.0);
        assert_eq!(summary.min, 1.0);
        assert_eq!(summary.max, 3.0);
    }

    #[test]
    fn median_of_even_count() {
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn display_uses_precision() {
        let summary = Summary::of(&[1.0, 2.0, 3.0]);
        assert_eq!(format!("{summary:.2}"), "2.00 [1.00, 3.00]");
    }
}
