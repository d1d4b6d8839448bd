/**
 * Identity of the current event-loop tick, for write batching that treats the first write of a tick apart
 * from the later ones (`src/transport/write-coalescer.ts` for the WebSocket, `src/forward/local-socket.ts`
 * for local sockets). Advanced by one shared `process.nextTick` per tick in which anyone asked, not one per
 * socket or per write.
 */
let tickEpoch = 0;
let epochAdvanceScheduled = false;

function advanceEpoch(): void {
  tickEpoch++;
  epochAdvanceScheduled = false;
}

/** A number that stays the same within one tick and changes by the next one. */
export function currentTickEpoch(): number {
  if (!epochAdvanceScheduled) {
    epochAdvanceScheduled = true;
    process.nextTick(advanceEpoch);
  }
  return tickEpoch;
}
