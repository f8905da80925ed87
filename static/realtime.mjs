/*!
 * realtime.mjs: the browser client as an ES module. The code is realtime.js itself (one
 * source, no build step): importing it runs it, and it defines globalThis.RealtimeClient.
 *
 *   import RealtimeClient from "/static/realtime.mjs";   // or: import { RealtimeClient } ...
 */
import "./realtime.js";

const RealtimeClient = globalThis.RealtimeClient;
const Subscription = RealtimeClient.Subscription;

export { RealtimeClient, Subscription };
export default RealtimeClient;
