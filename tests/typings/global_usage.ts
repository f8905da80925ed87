// A page that loads realtime.js with a <script> tag: window.RealtimeClient is typed.
const client = new window.RealtimeClient("/ws", { token: "jwt" });
client.subscribe("leaderboard:1", {
  onEvent(event) {
    const offset: number = event.offset;
    void offset;
  },
});
// @ts-expect-error: no such method
client.publish("leaderboard:1", {});
