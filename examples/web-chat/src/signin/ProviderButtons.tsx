import { useEffect, useState } from 'react'
import { useZajel } from '@zajel/client/react'
import { listProviders, signInError, startHref, type Provider } from './oidc.ts'

/** One "Sign in with …" link per configured provider (nothing when none), and the error a
 * failed provider sign-in came back with. */
export function ProviderButtons() {
  const { serverUrl } = useZajel()
  const [providers, setProviders] = useState<Provider[]>([])
  const error = signInError()

  useEffect(() => {
    let live = true
    void listProviders(serverUrl).then((list) => live && setProviders(list))
    return () => {
      live = false
    }
  }, [serverUrl])

  if (providers.length === 0 && !error) return null
  return (
    <div className="providers">
      {error && <p className="error" role="alert" data-testid="provider-error">{error}</p>}
      {providers.length > 0 && <p className="muted or">or</p>}
      {providers.map((p) => (
        <a key={p.id} className="secondary provider" href={startHref(serverUrl, p)}
          data-testid="provider" data-provider={p.id}>
          Sign in with {p.name}
        </a>
      ))}
    </div>
  )
}
