// Package render builds the Kubernetes objects that a VoiceAgent wants, as pure
// functions of the VoiceAgent and a few observed inputs. Nothing here talks to the API
// server; everything about what a child looks like lives here and is golden-tested.
package render
