//! Running the rules over a view in time linear in its length, and little of it: every
//! rule's regex yields the literals each of its matches must start with and end with
//! (regex-syntax's literal extraction), one pass per view finds them all ([`LiteralSet`]), and a
//! rule's regex runs only between a start literal and an end literal within reach of it.
//! Benign text, which holds a rule's verbs or its objects but rarely both in order, costs
//! that pass and almost nothing else.

use regex::bytes::Regex;
use regex_syntax::hir::literal::{ExtractKind, Extractor, Seq};

use super::literals::LiteralSet;
use super::rules::{View, RULES};

/// The longest match a rule is looked for in (bytes from its start literal to its end).
const REACH: usize = 400;
/// For a rule known by one side only, or by hand anchors: how far the regex looks past it.
const WINDOW: usize = 320;
/// The bytes of a literal kept: enough to be rare in text.
const KEEP: usize = 8;
/// Context kept after a span's end for `\b` and other look-arounds.
const LOOK: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    /// Every match starts with one of the rule's start literals.
    Start,
    /// Every match ends with one of its end literals.
    End,
    /// A hand-picked literal inside every match, for rules whose ends are no literals.
    Anchor,
}

/// One view's literals, and for each the rules it belongs to and how.
type Literals = (Vec<Vec<u8>>, Vec<Vec<(u16, Side)>>);

/// One view's literals, and what each means for which rule.
struct ViewLiterals {
    literals: LiteralSet,
    arms: Vec<Vec<(u16, Side)>>,
}

pub(super) struct Matcher {
    /// By rule index; `None` for a rule that did not compile (a test checks there are none).
    pub(super) rules: Vec<Option<Regex>>,
    /// By rule: whether its start and its end literals are known.
    sides: Vec<(bool, bool)>,
    /// By rule: a rule for data only (`data.`), run on tool results and fetched text.
    for_data: Vec<bool>,
    text: ViewLiterals,
    squeezed: ViewLiterals,
}

/// The literals every match of `pattern` starts (or ends) with, when they are few and long
/// enough to be worth finding: an empty or one-byte literal would be found everywhere.
fn literals(pattern: &str, kind: ExtractKind) -> Option<Vec<Vec<u8>>> {
    let hir =
        regex_syntax::ParserBuilder::new().unicode(!pattern.is_ascii()).utf8(false).build().parse(pattern).ok()?;
    let mut ex = Extractor::new();
    let suffix = matches!(kind, ExtractKind::Suffix);
    ex.kind(kind).limit_class(16).limit_repeat(4).limit_literal_len(24).limit_total(400);
    let mut seq: Seq = ex.extract(&hir);
    // Eight bytes are rare enough in text, and compare as one word.
    if suffix {
        seq.keep_last_bytes(KEEP);
    } else {
        seq.keep_first_bytes(KEEP);
    }
    seq.dedup();
    let lits = seq.literals()?;
    if lits.is_empty() || lits.iter().any(|l| l.len() < 3) {
        return None;
    }
    Some(lits.iter().map(|l| l.as_bytes().to_vec()).collect())
}

impl Matcher {
    pub(super) fn build() -> Matcher {
        let rules = RULES
            .iter()
            .map(|r| {
                // Byte regexes without Unicode classes for the ASCII rules: `.`, `\w` and
                // `\b` as bytes keep the DFA small.
                regex::bytes::RegexBuilder::new(r.pattern)
                    .unicode(!r.pattern.is_ascii())
                    .size_limit(1 << 22)
                    .build()
                    .ok()
            })
            .collect();
        let mut sides = Vec::with_capacity(RULES.len());
        let mut lits: [Literals; 2] = Default::default();
        for (i, r) in RULES.iter().enumerate() {
            let (lit, arms) = &mut lits[usize::from(r.view == View::Squeezed)];
            let mut add = |l: Vec<u8>, side: Side| {
                let at = lit.iter().position(|k| *k == l).unwrap_or_else(|| {
                    lit.push(l);
                    arms.push(Vec::new());
                    lit.len() - 1
                });
                arms[at].push((i as u16, side));
            };
            let start = literals(r.pattern, ExtractKind::Prefix);
            let end = literals(r.pattern, ExtractKind::Suffix);
            sides.push((start.is_some(), end.is_some()));
            if start.is_none() && end.is_none() {
                for a in super::anchors::ANCHORS.iter().filter(|(id, _)| *id == r.id).flat_map(|(_, a)| a.iter()) {
                    add(a.as_bytes().to_vec(), Side::Anchor);
                }
            }
            for (found, side) in [(start, Side::Start), (end, Side::End)] {
                for l in found.into_iter().flatten() {
                    add(l, side);
                }
            }
        }
        let [text, squeezed] = lits.map(|(lit, arms)| ViewLiterals { literals: LiteralSet::new(&lit), arms });
        let for_data = RULES.iter().map(|r| r.id.starts_with("data.")).collect();
        Matcher { rules, sides, for_data, text, squeezed }
    }

    /// The rules nothing would find: neither start nor end literals nor hand anchors.
    #[cfg(test)]
    pub(super) fn unfindable(&self) -> Vec<&'static str> {
        RULES
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                let (s, e) = self.sides[*i];
                !(s || e || super::anchors::ANCHORS.iter().any(|(id, a)| *id == r.id && !a.is_empty()))
            })
            .map(|(_, r)| r.id)
            .collect()
    }

    /// Whether rule `i` needs hand anchors (its matches start and end with no literal).
    #[cfg(test)]
    pub(super) fn anchored_by_hand(&self, i: usize) -> bool {
        self.sides[i] == (false, false)
    }

    /// The rules of `kind` that match in `view` (each once, with its first match's span).
    /// `data`: the rules for data (`data.`) run too.
    pub(super) fn run(&self, kind: View, view: &str, data: bool, found: &mut dyn FnMut(usize, (usize, usize))) {
        let auto = match kind {
            View::Text => &self.text,
            View::Squeezed => &self.squeezed,
        };
        // (rule, side, start, end) of every literal found.
        let mut events: Vec<(u16, Side, u32, u32)> = Vec::new();
        auto.literals.find(view.as_bytes(), &mut |lit, start, end| {
            for &(rule, side) in &auto.arms[lit as usize] {
                if data || !self.for_data[usize::from(rule)] {
                    events.push((rule, side, start as u32, end as u32));
                }
            }
        });
        // Text that holds no literal (most of it) costs no allocation.
        if events.is_empty() {
            return;
        }
        // Grouped by rule, each group in start order: a short text has a few events for a few
        // of the rules, so sorting them beats a pass over every rule.
        events.sort_unstable_by_key(|e| (e.0, e.2));
        let bytes = view.as_bytes();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut starts: Vec<usize> = Vec::new();
        let mut ends: Vec<usize> = Vec::new();
        for group in events.chunk_by(|a, b| a.0 == b.0) {
            let rule = usize::from(group[0].0);
            let Some(re) = &self.rules[rule] else { continue };
            spans.clear();
            ends.clear();
            starts.clear();
            ends.extend(group.iter().filter(|e| e.1 == Side::End).map(|e| e.3 as usize));
            starts.extend(group.iter().filter(|e| e.1 == Side::Start).map(|e| e.2 as usize));
            // Literals of different lengths: their ends are not in start order.
            ends.sort_unstable();
            let mut push = |from: usize, to: usize| match spans.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => spans.push((from, to)),
            };
            match self.sides[rule] {
                (true, true) => {
                    // For each start, the ends after it within reach; both pointers only
                    // move forward, so this is linear in the events.
                    let (mut j, mut k) = (0, 0);
                    for &p in &starts {
                        while j < ends.len() && ends[j] <= p {
                            j += 1;
                        }
                        if j == ends.len() {
                            break;
                        }
                        if ends[j] > p + REACH {
                            continue;
                        }
                        k = k.max(j);
                        while k + 1 < ends.len() && ends[k + 1] <= p + REACH {
                            k += 1;
                        }
                        push(p, ends[k]);
                    }
                }
                (true, false) => starts.iter().for_each(|&p| push(p, p + WINDOW)),
                (false, true) => {
                    for &q in &ends {
                        push(q.saturating_sub(WINDOW), q);
                    }
                }
                (false, false) => {
                    // In start order, so that spans merge.
                    for e in group.iter().filter(|e| e.1 == Side::Anchor) {
                        push((e.2 as usize).saturating_sub(WINDOW), e.3 as usize + WINDOW);
                    }
                }
            }
            let hit = spans.iter().find_map(|&(from, to)| {
                let hay = &bytes[..(to + LOOK).min(bytes.len())];
                re.find_at(hay, from.min(hay.len())).map(|m| (m.start(), m.end()))
            });
            if let Some(span) = hit {
                found(rule, span);
            }
        }
    }
}
