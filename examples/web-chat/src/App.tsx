import { useZajel } from '@zajel/client/react'
import { AuthScreen } from './components/AuthScreen.tsx'
import { ChatApp } from './components/ChatApp.tsx'
import { ConnectionBanner } from './components/ConnectionBanner.tsx'
import { useTheme } from './theme.ts'

export default function App() {
  const { session } = useZajel()
  const theme = useTheme()
  return (
    <div className="app">
      <ConnectionBanner />
      {session ? <ChatApp theme={theme} /> : <AuthScreen theme={theme} />}
    </div>
  )
}
