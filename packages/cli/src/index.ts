// @roamdesk/cli as a library: the pieces tests and other tools reuse. The executable entry is main.ts.
export * from './guest.ts';
export { describeError, type ErrorView } from './output.ts';
