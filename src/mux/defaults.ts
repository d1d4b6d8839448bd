/**
 * Our own defaults of the smux layer (spec §9.4, §9.6), in one place. Protocol limits stay with the codec
 * (`SMUX_FRAME_DATA_LIMIT_BYTES` in `src/mux/frame.ts`); what is here is what pf-daemon chooses within
 * them. The receive-buffer figures are the defaults of the matching `tuning:` keys: `defaultTuning`
 * (`src/config/types.ts`) takes them from here, and the session receives the resolved values.
 */
/**
 * Most PSH data bytes per frame we write, bytes (our default; the reference libraries write at most 32 768).
 * At most `SMUX_FRAME_DATA_LIMIT_BYTES` (`src/mux/frame.ts`), the most a reader must accept.
 */
export const SMUX_WRITE_FRAME_DATA_BYTES = 32_768;

/**
 * Writable highWaterMark of each smux stream, bytes (our default): what a local socket may write ahead of the
 * session before `write()` returns false and the socket is paused. The send window bounds what is in flight.
 */
export const STREAM_WRITE_BUFFER_BYTES = 64 * 1024;

/**
 * Default send budget of one session, bytes (our default; `sendBudgetBytes`, `src/mux/send-budget.ts`): what
 * the local sockets of all its streams may have read and not yet seen pulled onto the wire, read reserves
 * included. 64 reading sockets' worth: far more than the data channel's send window carries (a few hundred
 * 1 KiB messages), so it never limits one connection, yet 1 000 connections that send at once hold 4 MiB,
 * not 64 MB.
 */
export const SESSION_SEND_BUDGET_BYTES = 4 * 1024 * 1024;

/**
 * Read reserve of one reading source, bytes (fixed by Node, not ours to choose): the most one read of a
 * TCP socket delivers (libuv's read buffer of 64 KiB, whatever the socket's highWaterMark).
 */
export const SEND_READ_RESERVE_BYTES = 64 * 1024;

/**
 * Readable highWaterMark of each stream, bytes (our default): what Node itself buffers before `push()` says
 * stop; everything beyond waits in the stream's receive queue (`src/mux/receive-queue.ts`).
 */
export const STREAM_READABLE_HIGH_WATER_BYTES = 64 * 1024;

/**
 * Interval of smux NOP keep-alives while the agent runs its smux keep-alive check, ms (fixed by the agent's
 * smux configuration, spec §9.4: NOP every 10 s, session death after 30 s without a frame, where §3.3 turns
 * keep-alive on).
 */
export const SMUX_KEEPALIVE_INTERVAL_MS = 10_000;

/** Default of `tuning.streamReceiveBufferBytes`: memory kept for one stream's slow reader before spilling, bytes. */
export const STREAM_RECEIVE_BUFFER_DEFAULT_BYTES = 4 * 1024 * 1024;

/** Default of `tuning.sessionReceiveBufferBytes`: memory kept across one session's streams before spilling, bytes. */
export const SESSION_RECEIVE_BUFFER_DEFAULT_BYTES = 64 * 1024 * 1024;

/** Default of `tuning.streamBacklogLimitBytes`: memory plus spill one stream may leave waiting before it is reset, bytes. */
export const STREAM_BACKLOG_LIMIT_DEFAULT_BYTES = 512 * 1024 * 1024;
