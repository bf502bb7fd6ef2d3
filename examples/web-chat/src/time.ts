// Human time: "14:05", "Yesterday", "last seen 5 min ago". All in the browser's locale and
// time zone.
import { useEffect, useState } from 'react'

const MINUTE = 60_000
const HOUR = 60 * MINUTE

const startOfDay = (t: number) => {
  const d = new Date(t)
  d.setHours(0, 0, 0, 0)
  return d.getTime()
}

export function clock(t: number): string {
  return new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
}

/** "Today", "Yesterday", "Monday", "3 March 2026". */
export function day(t: number, now = Date.now()): string {
  const days = Math.round((startOfDay(now) - startOfDay(t)) / (24 * HOUR))
  if (days === 0) return 'Today'
  if (days === 1) return 'Yesterday'
  if (days > 1 && days < 7) return new Date(t).toLocaleDateString([], { weekday: 'long' })
  return new Date(t).toLocaleDateString([], { day: 'numeric', month: 'long', year: 'numeric' })
}

export const sameDay = (a: number, b: number) => startOfDay(a) === startOfDay(b)

/** For a conversation row: the time today, else the day. */
export function short(t: number, now = Date.now()): string {
  if (sameDay(t, now)) return clock(t)
  const d = day(t, now)
  return d.length > 10 ? new Date(t).toLocaleDateString([], { day: 'numeric', month: 'short' }) : d
}

export function lastSeen(t: number | null | undefined, now = Date.now()): string {
  if (!t) return 'offline'
  const ago = now - t
  if (ago < MINUTE) return 'last seen just now'
  if (ago < HOUR) return `last seen ${Math.floor(ago / MINUTE)} min ago`
  if (sameDay(t, now)) return `last seen today at ${clock(t)}`
  return `last seen ${day(t, now).toLowerCase()} at ${clock(t)}`
}

/** The time now, refreshed every `ms` (for "x min ago" labels). */
export function useNow(ms = 30_000): number {
  const [now, setNow] = useState(() => Date.now())
  useEffect(() => {
    const id = setInterval(() => setNow(Date.now()), ms)
    return () => clearInterval(id)
  }, [ms])
  return now
}
