import { createRoot } from 'react-dom/client'
import { ZajelProvider } from '@zajel/client/react'
import './index.css'
import App from './App.tsx'
import { returnFromProvider } from './signin/oidc.ts'

// By default the server serves this app, so the API is on the page's own origin. A build for
// another origin sets VITE_ZAJEL_SERVER (the server then needs that origin in its CORS and
// WebSocket allowlists, see docs/web.md).
const serverUrl = import.meta.env.VITE_ZAJEL_SERVER || undefined

// Back from "Sign in with …": pick up the session first, so the app starts signed in.
void returnFromProvider(serverUrl ?? window.location.origin).then(() =>
  createRoot(document.getElementById('root')!).render(
    <ZajelProvider serverUrl={serverUrl}>
      <App />
    </ZajelProvider>,
  ),
)
