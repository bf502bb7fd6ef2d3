import { useState, type FormEvent } from 'react'
import { useZajel } from '@zajel/client/react'
import { friendly } from '../errors.ts'
import { ProviderButtons } from '../signin/ProviderButtons.tsx'
import { ThemeButton, type ThemeProps } from './ThemeButton.tsx'

export function AuthScreen({ theme }: ThemeProps) {
  const { register, login } = useZajel()
  const [username, setUsername] = useState('')
  const [password, setPassword] = useState('')
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)

  const submit = (how: 'register' | 'login') => async (e?: FormEvent) => {
    e?.preventDefault()
    setBusy(true)
    setError(null)
    try {
      await (how === 'register' ? register : login)(username.trim(), password)
    } catch (err) {
      setError(friendly(err))
    } finally {
      setBusy(false)
    }
  }

  return (
    <main className="auth">
      <div className="auth-theme"><ThemeButton theme={theme} /></div>
      <form className="auth-card" onSubmit={submit('login')} aria-describedby={error ? 'auth-error' : undefined}>
        <div className="logo" aria-hidden="true">ز</div>
        <h1>Zajel</h1>
        <p className="muted">Chat with your friends, live.</p>
        <label>
          Username
          <input autoComplete="username" value={username} required autoCapitalize="none" spellCheck={false}
            onChange={(e) => setUsername(e.target.value)} data-testid="username" />
        </label>
        <label>
          Password
          <input type="password" autoComplete="current-password" value={password} required
            onChange={(e) => setPassword(e.target.value)} data-testid="password" />
        </label>
        {error && <p className="error" id="auth-error" role="alert" data-testid="auth-error">{error}</p>}
        <button type="submit" className="primary" disabled={busy} data-testid="login">Log in</button>
        <button type="button" className="secondary" disabled={busy} onClick={() => void submit('register')()}
          data-testid="register">
          Create account
        </button>
        <ProviderButtons />
      </form>
    </main>
  )
}
