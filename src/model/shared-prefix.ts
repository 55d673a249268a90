// Finds sequences that begin with the same tokens, so that a causal model can run the common
// prefix once and the rest of each sequence on its key-value cache. Preference data is made
// of such sequences: each prompt appears with two or more responses.

/** Sequences `members` (indices into the input) whose first `prefixLength` tokens are equal. */
export interface PrefixGroup {
  prefixLength: number;
  members: number[];
}

/**
 * Prefix length below which groupSharedPrefixes leaves sequences on their own. Running a
 * prefix separately costs one more ORT run and a copy of its key-value cache per member, so
 * a few shared tokens are not worth it.
 */
export const MIN_SHARED_PREFIX = 16;

function compareTokens(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

function commonPrefixLength(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * Groups the sequences that share a prefix of at least `minShared` tokens, and at least one
 * token whatever `minShared` is. Every member
 * keeps at least one token after its group's prefix, because the model must run a member's
 * last token to read its output there.
 *
 * In lexicographic order, the common prefix of a run of sequences is the minimum common
 * prefix of its neighbours. Groups are runs of that order, grown greedily while adding the
 * next sequence does not lower the tokens saved, (members - 1) * prefixLength. Sequences in
 * no group are returned in `singles`, in input order.
 */
export function groupSharedPrefixes(
  seqs: readonly (readonly number[])[],
  minShared = MIN_SHARED_PREFIX,
): { groups: PrefixGroup[]; singles: number[] } {
  const least = Math.max(1, minShared);
  const order = seqs.map((_, i) => i).sort((a, b) => compareTokens(seqs[a], seqs[b]) || a - b);
  const groups: PrefixGroup[] = [];
  const singles: number[] = [];

  let members: number[] = [];
  let prefixLength = 0;
  const close = () => {
    if (members.length >= 2) groups.push({ prefixLength, members });
    else singles.push(...members);
  };

  for (const index of order) {
    const seq = seqs[index];
    if (members.length > 0) {
      const previous = seqs[members[members.length - 1]];
      const joined = Math.min(prefixLength, commonPrefixLength(previous, seq), seq.length - 1);
      if (joined >= least && members.length * joined >= (members.length - 1) * prefixLength) {
        members.push(index);
        prefixLength = joined;
        continue;
      }
      close();
    }
    members = [index];
    prefixLength = seq.length - 1;
  }
  if (members.length > 0) close();
  singles.sort((a, b) => a - b);
  return { groups, singles };
}
