/**
 * `npm run demo`: the daemon forwarding a local port through the built-in emulator.
 * Placeholder until the forwarding issue lands.
 */
process.stdout.write('pf-daemon demo: not yet - forwarding lands with the port-forwarding issue\n');
