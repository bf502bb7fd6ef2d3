// uniffi's generated Kotlin marks one internal call with this opt-in annotation, added in
// kotlinx-coroutines 1.5. Debian's coroutines jar (1.0.1, the only one installable here) lacks
// it, and it is nothing but an annotation, so the test compiles this declaration alongside.
// An Android app uses a current kotlinx-coroutines and does not need this file.
package kotlinx.coroutines

@RequiresOptIn(level = RequiresOptIn.Level.WARNING)
@Retention(AnnotationRetention.BINARY)
annotation class DelicateCoroutinesApi
