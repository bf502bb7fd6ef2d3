import { createRoot } from 'react-dom/client'
import { ZajelProvider } from '@zajel/client'
import './index.css'
import App from './App.tsx'

// The server serves this app, so the API is on the page's own origin (the default).
createRoot(document.getElementById('root')!).render(
  <ZajelProvider>
    <App />
  </ZajelProvider>,
)
