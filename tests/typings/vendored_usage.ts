// The client copied into a project as files (realtime.mjs next to its .d.mts), no package.
import RealtimeClient from "../../static/realtime.mjs";
import type { Position } from "../../static/realtime.mjs";

const rt = new RealtimeClient();
const where: Position | null = rt.subscribe("contest:1").position;
void where;
// @ts-expect-error: subscribe needs a channel
rt.subscribe();
