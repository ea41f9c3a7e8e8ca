//! Reload-time pruning: keeping, re-judging or removing flows when the
//! policy or the peers change. O(capacity), never on the packet path.

use super::ended::EndCause;
use super::entry::Entry;
use super::{Conntrack, PeerId, RuleId};

impl Conntrack {
    /// Keeps only the flows for which `keep` returns true; returns how many
    /// were removed. Fragment entries of removed flows go too, so a cut
    /// flow's fragments stop at once. O(capacity): meant for policy reloads.
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry<'_>) -> bool) -> usize {
        let doomed: Vec<u32> = self
            .conns
            .occupied()
            .filter(|&i| match self.conns.get(i) {
                Some((key, conn)) => !keep(&Entry { key, conn }),
                None => false,
            })
            .collect();
        for &i in &doomed {
            self.take(i, EndCause::Removed);
        }
        self.drop_orphan_fragments();
        self.counters.removed += doomed.len() as u64;
        doomed.len()
    }

    /// Forgets fragment entries whose flow is gone.
    fn drop_orphan_fragments(&mut self) {
        let orphans: Vec<u32> = self
            .frags
            .occupied()
            .filter(|&i| match self.frags.get(i) {
                Some((_, f)) => self.conns.generation(f.owner) != Some(f.owner_generation),
                None => false,
            })
            .collect();
        for i in orphans {
            self.frags.remove(i);
        }
    }

    /// Like [`Conntrack::retain`], but `judge` also names the rule a kept
    /// flow is now admitted by (`None` removes it), so after a policy
    /// reload every flow points at a rule of the policy in force.
    pub fn rejudge(&mut self, mut judge: impl FnMut(&Entry<'_>) -> Option<RuleId>) -> usize {
        let verdicts: Vec<(u32, Option<RuleId>)> = self
            .conns
            .occupied()
            .filter_map(|i| {
                let (key, conn) = self.conns.get(i)?;
                Some((i, judge(&Entry { key, conn })))
            })
            .collect();
        let mut removed = 0;
        for (i, verdict) in verdicts {
            match verdict {
                Some(r) => {
                    if let Some(c) = self.conns.get_mut(i) {
                        c.rule = r;
                    }
                }
                None => {
                    self.take(i, EndCause::Removed);
                    removed += 1;
                }
            }
        }
        self.counters.removed += removed as u64;
        if removed > 0 {
            self.drop_orphan_fragments();
        }
        removed
    }

    /// Removes every flow of a peer (removed from the policy, quarantined).
    pub fn remove_peer(&mut self, peer: PeerId) -> usize {
        self.retain(|e| e.peer() != peer)
    }
}
