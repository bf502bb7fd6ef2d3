import type { useTheme } from '../theme.ts'

export interface ThemeProps {
  theme: ReturnType<typeof useTheme>
}

export function ThemeButton({ theme }: ThemeProps) {
  const next = theme.theme === 'dark' ? 'light' : 'dark'
  return (
    <button type="button" className="icon" onClick={theme.toggle} aria-label={`Switch to ${next} theme`}
      title={`Switch to ${next} theme`} data-testid="theme">
      {theme.theme === 'dark' ? '☀' : '☾'}
    </button>
  )
}
