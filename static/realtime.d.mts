// Types of realtime.mjs (the ES module entry): the same declarations as realtime.d.ts.
export * from "./realtime.js";
export { default } from "./realtime.js";
