// A round initial with a colour derived from the name, and an optional presence dot.
function hue(name: string): number {
  let h = 0
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360
  return h
}

export function Avatar({ name, online, size = 40 }: { name: string; online?: boolean; size?: number }) {
  return (
    <span className="avatar" style={{ width: size, height: size, ['--hue' as string]: hue(name) }} aria-hidden="true">
      {name.slice(0, 1).toUpperCase()}
      {online !== undefined && <span className={`presence ${online ? 'on' : ''}`} />}
    </span>
  )
}
