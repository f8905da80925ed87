// Checked by tests/unit/test_client_package.py (tsc --noEmit, strict): the typings of the
// browser client as a front-end project imports it, by package name (package.json exports).
import RealtimeClient, {
  RealtimeClient as Named,
  type RealtimeEvent,
  type Subscription,
} from "realtime-push-client";

interface Verdict {
  verdict: string;
  test: number;
}

const rt: RealtimeClient = new Named("/ws", {
  getToken: async () => "jwt",
  transports: ["websocket", "sse"],
  upgradeDelay: 60000,
});
const sameClass: typeof RealtimeClient = Named;
void sameClass;

const sub: Subscription<Verdict> = rt.subscribe<Verdict>("submission:1", {
  since: { epoch: "e", offset: 3 },
  onState(event) {
    if (event) {
      const verdict: string = event.data.verdict;
      void verdict;
    }
  },
  onEvent(event: RealtimeEvent<Verdict>) {
    const n: number = event.data.test + event.offset + this.offset;
    void n;
  },
  onError(err) {
    const code: string = err.code;
    void code;
  },
});
const off: () => void = rt.on("transport", (transport) => {
  const t: "websocket" | "sse" = transport;
  void t;
});
off();
rt.on("disconnected", (info) => {
  const code: number = info.code;
  void code;
});
const position = sub.position;
if (position) {
  const offset: number = position.offset;
  void offset;
}
const serverNow: number = rt.now();
void serverNow;
const transport: "websocket" | "sse" = rt.transport;
void transport;
sub.unsubscribe();
rt.close();

// Each line below must be refused: if the typings were too loose, tsc would report the
// directive as unused and the check fails.
// @ts-expect-error: no such client event
rt.on("message", () => {});
// @ts-expect-error: a position needs its epoch
rt.subscribe("contest:1", { since: { offset: 1 } });
rt.subscribe<Verdict>("submission:2", {
  onEvent(event) {
    // @ts-expect-error: event data is typed
    const wrong: number = event.data.verdict;
    void wrong;
  },
});
// @ts-expect-error: unknown transport
new RealtimeClient("/ws", { transports: ["long-polling"] });
// @ts-expect-error: state is read-only
rt.state = "connected";
