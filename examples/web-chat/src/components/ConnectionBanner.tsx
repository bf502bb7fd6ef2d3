import { useZajel } from '@zajel/client/react'
import type { ConnectionState } from '@zajel/client'
import { friendly } from '../errors.ts'

function describe(state: ConnectionState): string {
  switch (state.status) {
    case 'connecting':
      return 'Connecting…'
    case 'online':
      return 'Online'
    case 'reconnecting':
      return `You’re offline. Reconnecting in ${Math.max(1, Math.ceil(state.retry_in_ms / 1000))} s… Messages you send now go out when you’re back.`
    case 'signed_out':
      return 'Signed out'
    case 'closed':
      return 'Disconnected'
  }
}

/** A slim bar while not online (present but hidden when online, so tests can read the state). */
export function ConnectionBanner() {
  const { state, session, error } = useZajel()
  if (!session) return null
  const detail = state.status !== 'online' && error ? ` (${friendly(error)})` : ''
  return (
    <div className={`banner banner-${state.status}`} role="status" data-testid="connection" data-status={state.status}
      hidden={state.status === 'online'}>
      {describe(state)}
      {detail}
    </div>
  )
}
