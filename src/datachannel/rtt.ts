/**
 * Round-trip time and retransmission timeout estimator of the reliable data channel (spec §7.3).
 *
 * RFC 6298 shape with the constants both reference ends use, plus the daemon's 200 ms RTO floor.
 * Pure arithmetic: no clock, the caller measures the samples (and applies Karn's rule).
 */

/** Estimator constants (spec §7.3). All protocol values except the floor, which is the daemon's own. */
export const RTT = {
  /** Smoothed RTT before the first sample, ms (protocol). */
  INITIAL_RTT_MS: 100,
  /** RTT variation before the first sample, ms (protocol). */
  INITIAL_RTT_VARIATION_MS: 0,
  /** RTO before the first sample, ms (protocol). */
  INITIAL_RTO_MS: 200,
  /** Gain α applied to a new sample when smoothing the RTT (protocol). */
  RTT_GAIN: 1 / 8,
  /** Gain β applied to a new deviation when smoothing the variation (protocol). */
  RTT_VARIATION_GAIN: 1 / 4,
  /** Clock granularity G, ms: lower bound of the variation term (protocol). */
  CLOCK_GRANULARITY_MS: 10,
  /** Largest RTO, ms (protocol). */
  MAX_RTO_MS: 1000,
  /** Smallest RTO, ms (daemon default; spec §7.3 "SHOULD also enforce a floor of 200 ms"). */
  MIN_RTO_MS: 200,
} as const;

/** Smoothed RTT, RTT variation and RTO for one direction of one session (spec §7.3). */
export class RttEstimator {
  private rtt: number = RTT.INITIAL_RTT_MS;
  private variation: number = RTT.INITIAL_RTT_VARIATION_MS;
  private rto: number = RTT.INITIAL_RTO_MS;

  /**
   * Feed one RTT sample, ms. Non-finite samples are ignored and negative ones count as 0 (a
   * monotonic clock never goes back, but a caller's arithmetic might).
   *
   * Order per spec §7.3: variation first, from the *previous* smoothed RTT; then the RTT; then
   * `RTO = clamp(rtt + max(G, 4·var), 200 ms, 1 s)`.
   */
  sample(ms: number): void {
    if (!Number.isFinite(ms)) return;
    const s = Math.max(0, ms);
    this.variation =
      (1 - RTT.RTT_VARIATION_GAIN) * this.variation + RTT.RTT_VARIATION_GAIN * Math.abs(this.rtt - s);
    this.rtt = (1 - RTT.RTT_GAIN) * this.rtt + RTT.RTT_GAIN * s;
    const raw = this.rtt + Math.max(RTT.CLOCK_GRANULARITY_MS, 4 * this.variation);
    this.rto = Math.min(RTT.MAX_RTO_MS, Math.max(RTT.MIN_RTO_MS, raw));
  }

  /** Current retransmission timeout, ms, within [200, 1000]. */
  get rtoMs(): number {
    return this.rto;
  }

  /** Current smoothed RTT, ms. */
  get srttMs(): number {
    return this.rtt;
  }

  /** Current RTT variation, ms. */
  get rttVariationMs(): number {
    return this.variation;
  }
}
