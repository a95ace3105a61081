//! The common shape of what a policy section says about one request, and the one place
//! where `mode: monitor` is applied. Every section (`limits` now; budgets, injection and
//! schema rules as they come) returns a [`Verdict`]: its objections, each with the mode of
//! the rule that raised it, and the body edits it asks for. [`Decision::apply`] folds the
//! verdicts of every matching policy into what the pipeline acts on: an enforcing objection
//! blocks, a monitored one is recorded as "would have blocked", and the edits of every
//! section are spliced into the body together, once.

use super::Mode;
use crate::http::splice::Edit;

pub use crate::error::Violation;

/// A change a section makes to the request before it is forwarded.
#[derive(Debug)]
pub struct PolicyEdit {
    pub mode: Mode,
    pub policy: String,
    pub rule: &'static str,
    /// What the edit does, for the decisions metric: `clamp`, `default`.
    pub action: &'static str,
    pub edit: Edit,
    /// What a monitored edit is recorded as: the objection the edit would have answered
    /// (a clamp's "above the ceiling"). `None`: a monitored edit leaves no record (a default
    /// filled in objects to nothing).
    pub objection: Option<Violation>,
}

/// What one section of the matching policies decided.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Objections, each with the mode of the rule that raised it.
    pub findings: Vec<(Mode, Violation)>,
    pub edits: Vec<PolicyEdit>,
}

impl Verdict {
    pub fn object(&mut self, mode: Mode, v: Violation) {
        self.findings.push((mode, v));
    }
}

/// Everything the policies decided for one request.
#[derive(Debug, Default)]
pub struct Decision<'p> {
    /// Names of the policies that applied, in order (borrowed from the snapshot).
    pub applied: Vec<&'p str>,
    /// The first enforcing objection: the request is refused.
    pub block: Option<Violation>,
    /// Objections of rules in monitor mode: recorded, not enforced.
    pub would_block: Vec<Violation>,
    /// Body edits of every section, spliced together before forwarding.
    pub edits: Vec<PolicyEdit>,
}

impl Decision<'_> {
    /// Folds a section's verdict in. This is the only place a rule's mode is looked at.
    pub fn apply(&mut self, v: Verdict) {
        for (mode, violation) in v.findings {
            match mode {
                Mode::Enforce if self.block.is_none() => self.block = Some(violation),
                Mode::Enforce => {}
                Mode::Monitor => self.would_block.push(violation),
            }
        }
        for edit in v.edits {
            match edit.mode {
                Mode::Enforce => self.edits.push(edit),
                Mode::Monitor => self.would_block.extend(edit.objection),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rule: &'static str) -> Violation {
        Violation { policy: "p".into(), rule, field: "f".into(), message: "m".into(), forbidden: false }
    }

    #[test]
    fn the_first_enforcing_objection_blocks_and_monitored_ones_are_recorded() {
        let mut d = Decision::default();
        let mut first = Verdict::default();
        first.object(Mode::Monitor, v("a"));
        first.object(Mode::Enforce, v("b"));
        d.apply(first);
        let mut second = Verdict::default();
        second.object(Mode::Enforce, v("c"));
        second.object(Mode::Monitor, v("d"));
        d.apply(second);
        assert_eq!(d.block.map(|b| b.rule), Some("b"));
        assert_eq!(d.would_block.iter().map(|w| w.rule).collect::<Vec<_>>(), ["a", "d"]);
    }
}
