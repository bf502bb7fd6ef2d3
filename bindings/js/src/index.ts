export * from './types.js';
export { ZajelClient, loadZajel, type Listener } from './client.js';
export {
  ZajelProvider,
  useZajel,
  useZajelEvent,
  useFriends,
  useConversations,
  useMessages,
  useTyping,
  type ZajelContextValue,
  type ZajelProviderProps,
} from './react.js';
