"""What a recorded Jumpstarter session means, between the cores (cassette, protocol, tunnel) and the commands.

- `tokens`: the token a call presents (one rule for `authorization: Bearer`);
- `tunnels`: a recorded router stream, which end of a tunnel it is, its frames and inner calls, and how the two
  ends of one tunnel pair up;
- `drivers`: which driver is which across sessions (its place in the device tree, from the driver reports);
- `optional`: the RPCs a peer copes without (answered UNIMPLEMENTED, noted rather than counted as differences);
- `volatile`: the fields that differ between two runs of one session, used alike by replay's matcher, diff,
  textconv and verify.
"""
