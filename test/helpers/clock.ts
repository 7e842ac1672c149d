/**
 * Waits out the end of the current hour when it is less than `marginMs` away, so that a test of
 * something counted per hour (an account's fixed rate window, the reputation buckets) runs inside
 * one hour (fixed windows and buckets change at the hour).
 */
export async function awayFromHourBoundary(marginMs = 5000): Promise<void> {
  const HOUR = 3_600_000;
  const left = HOUR - (Date.now() % HOUR);
  if (left < marginMs) await new Promise((r) => setTimeout(r, left + 50));
}
