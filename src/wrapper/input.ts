/**
 * What the wrapper says about an input entry it will not run; the entry itself is read with
 * decodeInputEntry (src/contract/codec.ts), which the client uses too.
 */

/** One line naming every problem of an invalid entry, for its `error` event. */
export const describeProblems = (entryId: string, problems: Record<string, string>): string =>
  `input ${entryId} was not run: ${Object.entries(problems)
    .map(([k, v]) => `${k} ${v}`)
    .join('; ')}`;
