// @zajel/client: the client (no React needed). React hooks: `@zajel/client/react`.
export * from './types.js';
export * from './errors.js';
export { ZajelClient, loadZajel, type Listener, type LoadOptions } from './client.js';
export { Outbox, outboxOf, type OutboxEntry, type OutboxState } from './outbox.js';
