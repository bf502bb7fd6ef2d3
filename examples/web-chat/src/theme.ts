// Light and dark themes: the system's choice unless the user picked one (kept in localStorage).
// The CSS reads `data-theme` on <html>; see index.css.
import { useEffect, useState } from 'react'

export type Theme = 'light' | 'dark'
const KEY = 'zajel.theme'

const system = (): Theme =>
  window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'

export function useTheme() {
  const [chosen, setChosen] = useState<Theme | null>(() => localStorage.getItem(KEY) as Theme | null)
  const [sys, setSys] = useState<Theme>(system)
  useEffect(() => {
    const mq = window.matchMedia?.('(prefers-color-scheme: dark)')
    const on = () => setSys(system())
    mq?.addEventListener('change', on)
    return () => mq?.removeEventListener('change', on)
  }, [])
  const theme = chosen ?? sys
  useEffect(() => {
    document.documentElement.dataset.theme = theme
  }, [theme])
  const toggle = () => {
    const next = theme === 'dark' ? 'light' : 'dark'
    localStorage.setItem(KEY, next)
    setChosen(next)
  }
  return { theme, toggle }
}
