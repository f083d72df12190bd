//! Local sampling for requests that arrive without a sampling decision.
//!
//! An explicit decision in the request always wins (`x-b3-sampled: 0` is never exported,
//! debug is always exported), as the B3 specification and the mesh's own sidecars do; the
//! configured sampler only decides for new traces and deferred B3 decisions. The names are
//! those of `OTEL_TRACES_SAMPLER`; the `parentbased_` variants therefore behave like their root.

use tracer_common::sampled_by_bound;

use super::ids::TraceId;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Keep this fraction of traces, decided from the trace id so every node agrees.
    Ratio(f64),
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error(
        "unknown sampler `{0}` (expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio)"
    )]
    Unknown(String),
    #[error("sampler argument `{0}` is not a ratio between 0 and 1")]
    BadRatio(String),
}

impl Sampler {
    /// `name` and `arg` as in `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, SamplerError> {
        let root = name
            .trim()
            .strip_prefix("parentbased_")
            .unwrap_or(name.trim());
        match root {
            "always_on" => Ok(Self::AlwaysOn),
            "always_off" => Ok(Self::AlwaysOff),
            "traceidratio" => {
                let raw = arg.unwrap_or("1.0").trim();
                let ratio: f64 = raw
                    .parse()
                    .map_err(|_| SamplerError::BadRatio(raw.to_owned()))?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(SamplerError::BadRatio(raw.to_owned()));
                }
                Ok(Self::Ratio(ratio))
            }
            _ => Err(SamplerError::Unknown(name.to_owned())),
        }
    }

    /// The bound of the sampling rule the kernel shares (`tracer_common::sampled_by_bound`, its
    /// `SAMPLE_BOUND` global): a trace is sampled when the low 63 bits of its id are below it,
    /// the scheme of the OpenTelemetry SDKs' ratio sampler.
    #[must_use]
    pub fn bound(&self) -> u64 {
        match *self {
            Self::AlwaysOn => u64::MAX,
            Self::AlwaysOff => 0,
            Self::Ratio(r) if r >= 1.0 => u64::MAX,
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "r is in [0, 1) so the product fits in 63 bits"
            )]
            Self::Ratio(r) => (r * (1u64 << 63) as f64) as u64,
        }
    }

    #[must_use]
    pub fn should_sample(&self, trace_id: TraceId) -> bool {
        sampled_by_bound(trace_id.low_u64(), self.bound())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        assert_eq!(
            Sampler::parse("parentbased_always_on", None).unwrap(),
            Sampler::AlwaysOn
        );
        assert_eq!(
            Sampler::parse("always_off", None).unwrap(),
            Sampler::AlwaysOff
        );
        assert_eq!(
            Sampler::parse("parentbased_traceidratio", Some("0.25")).unwrap(),
            Sampler::Ratio(0.25)
        );
        assert!(Sampler::parse("traceidratio", Some("1.5")).is_err());
        assert!(Sampler::parse("traceidratio", Some("half")).is_err());
        assert!(Sampler::parse("jaeger_remote", None).is_err());
    }

    #[test]
    fn ratio_is_roughly_respected_and_deterministic() {
        let s = Sampler::Ratio(0.25);
        let ids: Vec<TraceId> = (0..4000).map(|_| TraceId::random()).collect();
        let kept = ids.iter().filter(|id| s.should_sample(**id)).count();
        assert!((800..1200).contains(&kept), "kept {kept} of 4000");
        assert!(
            ids.iter()
                .all(|id| s.should_sample(*id) == s.should_sample(*id))
        );
        assert!(!Sampler::Ratio(0.0).should_sample(ids[0]));
    }
}
